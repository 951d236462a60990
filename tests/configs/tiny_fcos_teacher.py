"""Tiny FCOS teacher: wider FPN (48) than the student (32) so the adapters have work to do."""

from detectron2.layers import ShapeSpec

from .tiny_fcos_base import dataloader, lr_multiplier, model, optimizer, train

model.backbone.out_channels = 48
model.backbone.top_block.in_channels = 48
model.backbone.top_block.out_channels = 48
model.head.input_shape = [ShapeSpec(channels=48)] * 5
model.head.conv_dims = [48]
