"""LazyConfig twin of tiny_base.yaml: a very small Faster R-CNN FPN for fast CPU tests (64 px)."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from ...configs.lazy.demo_student_slimR18 import dataloader, model, optimizer, train

model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=18, norm="BN"),
    out_features=["res2", "res3", "res4", "res5"],
    freeze_at=0,
)
model.backbone.out_channels = 32
model.proposal_generator.head.in_channels = 32
model.proposal_generator.pre_nms_topk = (100, 50)
model.proposal_generator.post_nms_topk = (100, 50)
model.roi_heads.batch_size_per_image = 32
model.roi_heads.box_head.input_shape = ShapeSpec(channels=32, height=7, width=7)
model.roi_heads.box_head.fc_dims = [64, 64]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=64)

dataloader.train.mapper.augmentations[0].update(short_edge_length=(64,), max_size=64)
dataloader.test.mapper.augmentations[0].update(short_edge_length=64, max_size=64)
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0

optimizer.lr = 0.01
train.max_iter = 4
train.output_dir = "./output/tiny_lazy"
lr_multiplier = L(WarmupParamScheduler)(
    # constant after warm-up (fvcore's ConstantParamScheduler refuses the final step's where=1.0)
    scheduler=L(MultiStepParamScheduler)(values=[1.0], milestones=[], num_updates="${train.max_iter}"),
    warmup_length=0.5,  # 2 of 4 iterations, as WARMUP_ITERS in tiny_base.yaml
    warmup_factor=0.001,
)
