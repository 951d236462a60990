"""Demo FCOS student trained alone (the baseline), a LazyConfig (Detectron2's FCOS has no YAML keys).

Detectron2's FCOS (``common/models/fcos.py``) on the slim R18 backbone of the demo students
(stem/res2 32 channels), FPN and head 64 channels on P3-P7, for the embedded demo dataset (128 px
images, 10 classes); data, optimiser and schedule of demo_student_slimR18.py. Also the config that
evaluates DeFeat FCOS checkpoints:

    python lazy_train_net.py --config-file configs/lazy/demo_fcos_student_slimR18.py --eval-only \
        train.init_checkpoint=output/lazy/demo_defeat_fcos_slimR18_from_R18/model_final.pth
"""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from defeat.modeling.backbones import slim_resnet

from .demo_student_slimR18 import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/fcos.py").model
model.backbone.bottom_up = L(slim_resnet)(
    depth=18,
    stem_out_channels=32,
    res2_out_channels=32,
    norm="BN",
    out_features=["res3", "res4", "res5"],
    freeze_at=0,  # from scratch: train (and BN) everything
)
model.backbone.out_channels = 64
model.backbone.top_block = L(LastLevelP6P7)(in_channels=64, out_channels=64, in_feature="p5")
model.head.input_shape = [ShapeSpec(channels=64)] * 5
model.head.conv_dims = [64, 64, 64, 64]
model.num_classes = 10
model.test_score_thresh = 0.05  # COCO-style evaluation keeps low-score detections
model.max_detections_per_image = 50

optimizer.lr = 0.01  # as the demo RetinaNets (focal-loss heads)
train.output_dir = "./output/lazy/demo_fcos_student_slimR18"
