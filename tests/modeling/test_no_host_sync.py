"""The KD loss path has no data-dependent host synchronisation (issue: speed).

Meta tensors carry shapes but no data, so any op whose result size or control flow depends on
tensor values (``.item()``, boolean indexing, ``nonzero``, ``repeat_interleave`` without
``output_size``) raises on them. Running masks, losses and the distiller on ``meta`` checks on a
CPU-only machine what ``torch.cuda.set_sync_debug_mode("error")`` checks on a GPU.
"""

import pytest
import torch
from detectron2.layers import ShapeSpec

from defeat import DeFeatDistiller, decoupled_feature_loss, decoupled_kl_loss, decoupled_sigmoid_kl_loss, gt_masks

META = torch.device("meta")
SHAPES = [(16, 16), (8, 8), (4, 4)]
STRIDES = [4, 8, 16]


def _boxes(device):
    return [torch.rand(5, 4, device=device), torch.rand(0, 4, device=device), torch.rand(3, 4, device=device)]


@pytest.mark.parametrize("assignment", ["scale", "all"])
def test_gt_masks_run_on_meta(assignment):
    masks = gt_masks(_boxes(META), SHAPES, STRIDES, assignment, 8.0)
    assert [tuple(m.shape) for m in masks] == [(3, h, w) for h, w in SHAPES]
    assert all(m.device == META and m.dtype == torch.float32 for m in masks)


def test_losses_and_their_backward_run_on_meta():
    s = [torch.randn(3, 4, h, w, device=META, requires_grad=True) for h, w in SHAPES]
    t = [torch.randn(3, 4, h, w, device=META) for h, w in SHAPES]
    masks = [torch.ones(3, h, w, device=META) for h, w in SHAPES]
    obj, bg = decoupled_feature_loss(s, t, masks)
    (obj + bg).backward()
    assert all(x.grad.shape == x.shape for x in s)
    flags = torch.zeros(7, dtype=torch.bool, device=META)
    for fn, extra in ((decoupled_kl_loss, {}), (decoupled_sigmoid_kl_loss, {"valid": flags})):
        logits = torch.randn(7, 5, device=META, requires_grad=True)
        obj, bg = fn(logits, torch.randn(7, 5, device=META), flags, 2.0, **extra)
        (obj + bg).backward()
        assert logits.grad.shape == (7, 5)


def test_distiller_neck_and_head_losses_run_on_meta():
    names = ["p2", "p3", "p4"]
    s_shapes = {f: ShapeSpec(channels=4, stride=st) for f, st in zip(names, STRIDES)}
    t_shapes = {f: ShapeSpec(channels=8, stride=st) for f, st in zip(names, STRIDES)}
    d = DeFeatDistiller(student_shapes=s_shapes, teacher_shapes=t_shapes, in_features=names).to(META)
    s = {f: torch.randn(3, 4, h, w, device=META, requires_grad=True) for f, (h, w) in zip(names, SHAPES)}
    t = {f: torch.randn(3, 8, h, w, device=META) for f, (h, w) in zip(names, SHAPES)}
    losses = d.neck_losses(s, t, _boxes(META))
    logits = torch.randn(6, 4, device=META, requires_grad=True)
    losses.update(d.head_losses(logits, torch.randn(6, 4, device=META), torch.ones(6, dtype=torch.bool, device=META)))
    sum(d.scheduled(losses).values()).backward()
    assert set(losses) == {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}
    assert all(x.grad is not None for x in s.values()) and d.adapters["p2"].weight.grad.device == META


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_sync_on_cuda():
    dev = torch.device("cuda")
    boxes = [b * 60 for b in _boxes(dev)]
    s = [torch.randn(3, 4, h, w, device=dev, requires_grad=True) for h, w in SHAPES]
    t = [torch.randn(3, 4, h, w, device=dev) for h, w in SHAPES]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        masks = gt_masks(boxes, SHAPES, STRIDES, "scale", 8.0)
        obj, bg = decoupled_feature_loss(s, t, masks)
        (obj + bg).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
