"""Slim ResNet-FPN backbones for CPU-sized demos (widths below Detectron2's R18/R34 minimum).

Detectron2's ``build_resnet_backbone`` requires 64 channels in res2 for R18/R34; this builder
honours ``MODEL.RESNETS.STEM_OUT_CHANNELS`` and ``RES2_OUT_CHANNELS`` for basic-block ResNets,
doubling the width at each stage, and puts Detectron2's standard FPN on top.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone import FPN, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem

__all__ = ["build_slim_resnet_fpn_backbone", "build_slim_retinanet_resnet_fpn_backbone", "slim_resnet"]

_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


def slim_resnet(
    *,
    depth: int = 18,
    stem_out_channels: int = 32,
    res2_out_channels: int = 32,
    norm: str = "BN",
    out_features=("res2", "res3", "res4", "res5"),
    freeze_at: int = 0,
    in_channels: int = 3,
) -> ResNet:
    """Basic-block ResNet (depth 18 or 34) whose width doubles from ``res2_out_channels`` at each
    stage (strides 4, 8, 16, 32); usable with ``LazyCall`` as well as from a YAML config."""
    if depth not in _BLOCKS:
        raise ValueError(f"slim ResNet supports MODEL.RESNETS.DEPTH 18 or 34, got {depth}")
    stem = BasicStem(in_channels=in_channels, out_channels=stem_out_channels, norm=norm)
    stages, in_ch, out_ch = [], stem_out_channels, res2_out_channels
    for i, n in enumerate(_BLOCKS[depth]):
        stride = 1 if i == 0 else 2
        stages.append(
            ResNet.make_stage(
                BasicBlock,
                n,
                stride_per_block=[stride] + [1] * (n - 1),
                in_channels=in_ch,
                out_channels=out_ch,
                norm=norm,
            )
        )
        in_ch, out_ch = out_ch, out_ch * 2
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


def _slim_resnet(cfg, input_shape: ShapeSpec) -> ResNet:
    r = cfg.MODEL.RESNETS
    return slim_resnet(
        depth=r.DEPTH,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        norm=r.NORM,
        out_features=r.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        in_channels=input_shape.channels,
    )


def _slim_fpn(cfg, input_shape: ShapeSpec, top_block) -> FPN:
    return FPN(
        bottom_up=_slim_resnet(cfg, input_shape),
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=top_block,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )


@BACKBONE_REGISTRY.register()
def build_slim_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Basic-block ResNet of any width + FPN (P2-P6 with the default FPN.IN_FEATURES)."""
    return _slim_fpn(cfg, input_shape, LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_slim_retinanet_resnet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """Basic-block ResNet of any width + RetinaNet's FPN: P3-P7 from ``FPN.IN_FEATURES``
    ``res3``-``res5``, with P6/P7 computed from P5 (cheaper than from C5 at slim widths)."""
    c = cfg.MODEL.FPN.OUT_CHANNELS
    return _slim_fpn(cfg, input_shape, LastLevelP6P7(c, c, in_feature="p5"))
