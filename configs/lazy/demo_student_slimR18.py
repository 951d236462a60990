"""Demo student trained alone, as a LazyConfig: the Python twin of configs/demo/student_slimR18.yaml.

Slim ResNet-18 FPN (stem/res2 32 channels, FPN 64, box head 256) on the embedded demo dataset
(128 px images, 10 shape classes), CPU-sized. Also the config that evaluates the checkpoints of
demo_defeat_slimR18_from_R18.py:

    python lazy_train_net.py --config-file configs/lazy/demo_student_slimR18.py --eval-only \
        train.init_checkpoint=output/lazy/demo_defeat_slimR18_from_R18/model_final.pth
"""

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    DatasetMapper,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

from defeat.modeling.backbones import slim_resnet

# Detectron2's Mask R-CNN FPN recipe, reshaped: Faster R-CNN (no mask head), demo sizes.
model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up = L(slim_resnet)(
    depth=18,
    stem_out_channels=32,
    res2_out_channels=32,
    norm="BN",
    out_features=["res2", "res3", "res4", "res5"],
    freeze_at=0,  # from scratch: train (and BN) everything
)
model.backbone.out_channels = 64
model.proposal_generator.head.in_channels = 64
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
model.proposal_generator.pre_nms_topk = (500, 300)  # (train, test)
model.proposal_generator.post_nms_topk = (500, 300)
model.roi_heads.num_classes = 10
model.roi_heads.batch_size_per_image = 64
model.roi_heads.box_head.input_shape = ShapeSpec(channels=64, height=7, width=7)
model.roi_heads.box_head.fc_dims = [256, 256]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=256)
model.roi_heads.box_predictor.test_topk_per_image = 50
model.roi_heads.mask_in_features = None
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
model.pixel_std = [1.0, 1.0, 1.0]  # as Detectron2's YAML default (the demo YAML configs keep it)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="defeat_demo_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(128,), max_size=128, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
    ),
    total_batch_size=8,
    num_workers=1,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="defeat_demo_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=128, max_size=128)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=1,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
)

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.02

train = get_config("common/train.py").train
train.output_dir = "./output/lazy/demo_student_slimR18"
train.max_iter = 500
train.eval_period = 0  # evaluate once, after training
train.checkpointer.period = 100000
train.device = "cpu"  # CPU-sized; train.device=cuda on a GPU
train.seed = 0
# From-scratch training at this LR can spike early (lazy_train_net.py applies this).
train.clip_gradients = dict(enabled=True, clip_type="norm", clip_value=10.0, norm_type=2.0)

# Steps at 375 and 450 of 500 iterations, warm-up over 100 (as the YAML twin): fractions of
# training, so a train.max_iter override scales the whole schedule.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[375, 450], num_updates=500),
    warmup_length=100 / 500,
    warmup_factor=0.001,
)
