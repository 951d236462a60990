"""A very small FCOS (ResNet-18 FPN 32, P3-P7, one head conv) for fast CPU tests (64 px).

Detectron2's FCOS is LazyConfig-only: this is the plain student (and its eval config)."""

from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from .tiny_base import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/fcos.py").model
model.backbone.bottom_up = L(ResNet)(
    stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
    stages=L(ResNet.make_default_stages)(depth=18, norm="BN"),
    out_features=["res3", "res4", "res5"],
    freeze_at=0,
)
model.backbone.out_channels = 32
model.backbone.top_block = L(LastLevelP6P7)(in_channels=32, out_channels=32, in_feature="p5")
model.head.input_shape = [ShapeSpec(channels=32)] * 5
model.head.conv_dims = [32]
model.head.norm = ""  # GN(32 groups) on P7's 1x1 map at batch 1 has one value per group
model.num_classes = 10
model.test_score_thresh = 0.0  # untrained: keep low-score detections
train.output_dir = "./output/tiny_fcos"
