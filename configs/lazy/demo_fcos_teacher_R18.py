"""Demo FCOS teacher: ResNet-18 FPN at full width (FPN and head 128), trained twice as long as the
students (1200 iterations), for demo_defeat_fcos_slimR18_from_R18.py."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BasicStem, ResNet

from .demo_fcos_student_slimR18 import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=18, norm="BN"),
    out_features=["res3", "res4", "res5"],
    freeze_at=0,
)
model.backbone.out_channels = 128
model.backbone.top_block.in_channels = 128
model.backbone.top_block.out_channels = 128
model.head.input_shape = [ShapeSpec(channels=128)] * 5
model.head.conv_dims = [128, 128, 128, 128]
train.max_iter = 1200
train.output_dir = "./output/lazy/demo_fcos_teacher_R18"
