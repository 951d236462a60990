"""LazyConfig twin of tiny_teacher.yaml: wider FPN than the student (48 channels)."""

from detectron2.layers import ShapeSpec

from .tiny_base import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_channels = 48
model.proposal_generator.head.in_channels = 48
model.roi_heads.box_head.input_shape = ShapeSpec(channels=48, height=7, width=7)
