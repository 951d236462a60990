"""A tiny ViTDet-style teacher: ViT (embed 32, depth 2, patch 16) + SimpleFeaturePyramid (P2-P6, 48
channels), Faster R-CNN heads (4conv1fc with LayerNorm, as ViTDet), for 64 px tests.

The ViT pads every batch to a 128 px square (``square_pad``): its maps are larger than the
student's (ResNet-FPN, 64 px batches) and are cropped to the student's grids."""

from functools import partial

import torch.nn as nn
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

from .tiny_base import dataloader, lr_multiplier, optimizer, train

model = get_config("common/models/mask_rcnn_vitdet.py").model
model.backbone.net.update(
    img_size=128,
    patch_size=16,
    embed_dim=32,
    depth=2,
    num_heads=2,
    drop_path_rate=0.0,
    window_size=0,
    window_block_indexes=[],
    use_rel_pos=False,
    norm_layer=partial(nn.LayerNorm, eps=1e-6),
)
model.backbone.out_channels = 48
model.backbone.square_pad = 128
model.proposal_generator.head.in_channels = 48
model.proposal_generator.pre_nms_topk = (100, 50)
model.proposal_generator.post_nms_topk = (100, 50)
model.roi_heads.num_classes = 10
model.roi_heads.batch_size_per_image = 32
model.roi_heads.box_head.input_shape = ShapeSpec(channels=48, height=7, width=7)
model.roi_heads.box_head.conv_dims = [16]
model.roi_heads.box_head.fc_dims = [64]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=64)
model.roi_heads.mask_in_features = None  # a box detector: no mask head
model.roi_heads.mask_pooler = None
model.roi_heads.mask_head = None
