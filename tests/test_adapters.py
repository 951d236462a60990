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
