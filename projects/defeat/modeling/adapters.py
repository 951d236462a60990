"""Per-level adapters that map student neck features to the teacher's channel count."""

from typing import Dict

import torch.nn as nn

from ..config.validation import ADAPTERS

__all__ = ["ADAPTERS", "build_adapter", "build_adapters"]


def build_adapter(kind: str, in_channels: int, out_channels: int, init_std: float = 1e-4) -> nn.Module:
    """One adapter: ``conv3x3`` / ``conv1x1`` (no activation; weights normal with ``init_std``,
    truncated at 2 std, bias 0) or ``none`` (identity)."""
    if kind == "none":
        if in_channels != out_channels:
            raise ValueError(
                f"MODEL.DEFEAT.NECK.ADAPTER is 'none' but student features have {in_channels} channels "
                f"and teacher features {out_channels}; use 'conv1x1' or 'conv3x3' to map them"
            )
        return nn.Identity()
    if kind not in ("conv3x3", "conv1x1"):
        raise ValueError(f"unknown MODEL.DEFEAT.NECK.ADAPTER {kind!r}; expected one of {ADAPTERS}")
    k = 3 if kind == "conv3x3" else 1
    conv = nn.Conv2d(in_channels, out_channels, kernel_size=k, padding=k // 2)
    nn.init.trunc_normal_(conv.weight, std=init_std, a=-2 * init_std, b=2 * init_std)
    nn.init.zeros_(conv.bias)
    return conv


def build_adapters(
    kind: str, student_channels: Dict[str, int], teacher_channels: Dict[str, int], init_std: float = 1e-4
) -> nn.ModuleDict:
    """A ``ModuleDict`` of adapters keyed by feature name (e.g. ``"p2"``)."""
    return nn.ModuleDict(
        {name: build_adapter(kind, c, teacher_channels[name], init_std) for name, c in student_channels.items()}
    )
