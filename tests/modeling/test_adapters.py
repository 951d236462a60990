"""Adapters: shapes, near-zero initialisation, identity, and the channel check."""

import pytest
import torch

from defeat import build_adapter, build_adapters


@pytest.mark.parametrize("kind,k", [("conv3x3", 3), ("conv1x1", 1)])
def test_conv_adapters_map_channels_and_start_near_zero(kind, k):
    a = build_adapter(kind, 16, 48)
    assert a.weight.shape == (48, 16, k, k)
    assert a.weight.abs().max() <= 2e-4 and a.weight.std() > 0
    assert torch.count_nonzero(a.bias) == 0
    x = torch.randn(2, 16, 9, 7)
    assert a(x).shape == (2, 48, 9, 7)


def test_none_is_identity_and_checks_channels():
    x = torch.randn(1, 8, 4, 4)
    assert build_adapter("none", 8, 8)(x) is x
    with pytest.raises(ValueError, match="8 channels and teacher features 16"):
        build_adapter("none", 8, 16)


def test_unknown_adapter():
    with pytest.raises(ValueError, match="unknown MODEL.DEFEAT.NECK.ADAPTER 'mlp'"):
        build_adapter("mlp", 8, 8)


def test_build_adapters_keys():
    d = build_adapters("conv1x1", {"p2": 8, "p3": 8}, {"p2": 16, "p3": 32})
    assert sorted(d) == ["p2", "p3"] and d["p3"].out_channels == 32


def test_init_std_sets_the_spread_and_the_truncation():
    torch.manual_seed(0)
    a = build_adapter("conv3x3", 64, 64, init_std=0.01)
    w = a.weight.detach()
    assert w.abs().max() <= 0.02
    # A normal truncated at 2 std has std ~0.88 of the untruncated one.
    assert 0.0080 < w.std().item() < 0.0096


def test_distiller_passes_init_std_from_config_and_rejects_non_positive():
    from detectron2.layers import ShapeSpec

    from defeat import DeFeatConfigError, DeFeatDistiller

    shapes = {"p2": ShapeSpec(channels=32, stride=4)}
    d = DeFeatDistiller(student_shapes=shapes, teacher_shapes=shapes, in_features=["p2"], adapter_init_std=0.05)
    assert d.adapters["p2"].weight.abs().max() > 2e-4  # not the default 1e-4 spread
    with pytest.raises(DeFeatConfigError, match="ADAPTER_INIT_STD = 0.0 must be > 0"):
        DeFeatDistiller(student_shapes=shapes, teacher_shapes=shapes, in_features=["p2"], adapter_init_std=0.0)
