"""DeFeatDistiller on plain tensors: level checks, mask modes, weights, and the NaN guard."""

import pytest
import torch
from detectron2.layers import ShapeSpec

from defeat import DeFeatConfigError, DeFeatDistiller, decoupled_feature_loss, gt_masks, standardize_channels

S = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
T = {"p2": ShapeSpec(channels=16, stride=4), "p3": ShapeSpec(channels=16, stride=8)}


def _distiller(**kw):
    args = dict(student_shapes=S, teacher_shapes=T, in_features=["p2", "p3"], scale_base=8.0)
    args.update(kw)
    return DeFeatDistiller(**args)


def _feats(channels, seed):
    g = torch.Generator().manual_seed(seed)
    return {"p2": torch.randn(2, channels, 16, 16, generator=g), "p3": torch.randn(2, channels, 8, 8, generator=g)}


BOXES = [torch.tensor([[4.0, 4.0, 30.0, 20.0], [40.0, 40.0, 60.0, 63.0]]), torch.zeros((0, 4))]


def test_stride_mismatch_is_an_error():
    bad = dict(T, p3=ShapeSpec(channels=16, stride=16))
    with pytest.raises(DeFeatConfigError, match="'p3' has stride 8 in the student but 16 in the teacher"):
        _distiller(teacher_shapes=bad)


def test_neck_losses_are_weighted_decoupled_loss_of_adapted_features():
    d = _distiller(neck_obj_weight=3.0, neck_bg_weight=5.0)
    s, t = _feats(8, 0), _feats(16, 1)
    got = d.neck_losses(s, t, BOXES)
    masks = gt_masks(BOXES, [(16, 16), (8, 8)], [4, 8], "scale", 8.0)
    obj, bg = decoupled_feature_loss([d.adapters[k](s[k]) for k in ("p2", "p3")], [t["p2"], t["p3"]], masks)
    assert got["loss_defeat_neck_obj"].item() == pytest.approx(3.0 * obj.item(), rel=1e-6)
    assert got["loss_defeat_neck_bg"].item() == pytest.approx(5.0 * bg.item(), rel=1e-6)


def test_coupled_mode_imitates_everything_as_one_region():
    d = _distiller(mask_assign="coupled", adapter="conv1x1")
    masks = d.masks(BOXES, _feats(8, 0))
    assert all(torch.equal(m, torch.ones_like(m)) for m in masks)
    got = d.neck_losses(_feats(8, 0), _feats(16, 1), BOXES)
    assert got["loss_defeat_neck_bg"].item() == 0.0 and got["loss_defeat_neck_obj"].item() > 0


def test_head_losses_weights_and_sigmoid_variant():
    d = _distiller(head_obj_weight=0.5, head_bg_weight=3.0, temperature=2.0)
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 11, generator=g), torch.randn(6, 11, generator=g)
    is_obj = torch.tensor([1, 0, 1, 0, 0, 0], dtype=torch.bool)
    from defeat import decoupled_kl_loss, decoupled_sigmoid_kl_loss

    got = d.head_losses(s, t, is_obj)
    obj, bg = decoupled_kl_loss(s, t, is_obj, 2.0)
    assert got["loss_defeat_head_obj"].item() == pytest.approx(0.5 * obj.item())
    assert got["loss_defeat_head_bg"].item() == pytest.approx(3.0 * bg.item())
    got = d.head_losses(s, t, is_obj, sigmoid=True)
    obj, bg = decoupled_sigmoid_kl_loss(s, t, is_obj, 2.0)
    assert got["loss_defeat_head_obj"].item() == pytest.approx(0.5 * obj.item())


def test_schedule_without_event_storage_uses_iteration_zero():
    d = _distiller(warmup_iters=4)
    out = d.scheduled({"loss_x": torch.tensor(8.0)})
    assert out["loss_x"].item() == pytest.approx(2.0)


def test_nan_kd_loss_stops_training_naming_the_loss(teacher_weights):
    """Detectron2's trainer check covers our losses: the message names the non-finite one."""
    from detectron2.engine import SimpleTrainer
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    from helpers import defeat_cfg, synthetic_batch

    model = build_model(defeat_cfg(teacher_weights)).train()
    real = model.distiller.neck_losses

    def nan_neck(*a, **k):
        out = real(*a, **k)
        out["loss_defeat_neck_bg"] = out["loss_defeat_neck_bg"] * float("nan")
        return out

    model.distiller.neck_losses = nan_neck
    trainer = SimpleTrainer(model, [synthetic_batch()], torch.optim.SGD(model.parameters(), lr=0.0))
    with EventStorage(7) as storage:
        trainer.storage = storage
        trainer.iter = 7
        with pytest.raises(FloatingPointError, match=r"iteration=7(.|\n)*loss_defeat_neck_bg"):
            trainer.run_step()


def test_channel_feature_norm_standardises_both_maps_before_the_decoupled_loss():
    d = _distiller(feature_norm="channel", neck_obj_weight=2.0, neck_bg_weight=3.0)
    s, t = _feats(8, 0), _feats(16, 1)
    got = d.neck_losses(s, t, BOXES)
    masks = gt_masks(BOXES, [(16, 16), (8, 8)], [4, 8], "scale", 8.0)
    adapted = [standardize_channels(d.adapters[k](s[k])) for k in ("p2", "p3")]
    obj, bg = decoupled_feature_loss(adapted, [standardize_channels(t[k]) for k in ("p2", "p3")], masks)
    assert got["loss_defeat_neck_obj"].item() == pytest.approx(2.0 * obj.item(), rel=1e-6)
    assert got["loss_defeat_neck_bg"].item() == pytest.approx(3.0 * bg.item(), rel=1e-6)
    # the teacher's per-channel scale and offset no longer matter; without the norm they do
    t_rescaled = {k: v * 9.0 + 4.0 for k, v in t.items()}
    again = d.neck_losses(s, t_rescaled, BOXES)
    assert again["loss_defeat_neck_bg"].item() == pytest.approx(got["loss_defeat_neck_bg"].item(), rel=1e-4)
    plain = _distiller(neck_obj_weight=2.0, neck_bg_weight=3.0)
    plain.load_state_dict(d.state_dict())
    assert plain.neck_losses(s, t_rescaled, BOXES)["loss_defeat_neck_bg"].item() != pytest.approx(
        plain.neck_losses(s, t, BOXES)["loss_defeat_neck_bg"].item(), rel=1e-2
    )


def test_unknown_feature_norm_is_refused_naming_the_setting():
    with pytest.raises(DeFeatConfigError, match="MODEL.DEFEAT.NECK.FEATURE_NORM = 'batch' is not supported"):
        _distiller(feature_norm="batch")
