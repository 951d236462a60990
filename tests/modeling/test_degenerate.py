"""DeFeatRCNN on degenerate inputs: empty images, zero-area boxes, 1000 boxes, odd sizes (padding).

Besides "losses finite, backward works", the neck masks the model builds are checked cell by
cell on the padded batch's feature maps (tiny config: strides 4..64, SCALE_BASE 8).
"""

import contextlib
import math

import pytest
import torch
from detectron2.data.detection_utils import filter_empty_instances
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from helpers import defeat_cfg

DEFEAT_KEYS = ("loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg")
STRIDES = (4, 8, 16, 32, 64)
MODES = ("teacher", "student")


def item(height, width, boxes, seed=0):
    """One training input of the given size with XYXY ``boxes`` (random classes and pixels)."""
    g = torch.Generator().manual_seed(seed)
    b = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(b)
    inst.gt_classes = torch.randint(0, 10, (len(b),), generator=g)
    image = torch.rand(3, height, width, generator=g) * 255
    return {"image": image, "instances": inst, "height": height, "width": width}


def random_boxes(k, height, width, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * torch.tensor([width - 2.0, height - 2.0])
    wh = torch.rand(k, 2, generator=g) * torch.tensor([width, height], dtype=torch.float32)
    return torch.cat([xy, torch.minimum(xy + wh, torch.tensor([width, height]))], dim=1)


@pytest.fixture(scope="module")
def models(teacher_weights):
    out = {}
    for mode in MODES:
        torch.manual_seed(0)
        out[mode] = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.HEAD.PROPOSALS", mode)).train()
    return out


@contextlib.contextmanager
def spy_masks(model):
    """Record what the distiller's ``masks`` gets (boxes, feature shapes) and returns."""
    seen = {}
    real = model.distiller.masks

    def spy(gt_boxes, features):
        seen["boxes"] = [b.clone() for b in gt_boxes]
        seen["shapes"] = [tuple(features[f].shape[-2:]) for f in model.distiller.in_features]
        seen["masks"] = real(gt_boxes, features)
        return seen["masks"]

    model.distiller.masks = spy
    try:
        yield seen
    finally:
        del model.distiller.masks


def forward(model, batch, seed=0):
    torch.manual_seed(seed)  # RPN / ROI sampling is random
    with spy_masks(model) as seen, EventStorage(0):
        losses = model(batch)
    return losses, seen


def backward_ok(model, loss):
    """Backward ``loss``: finite gradients on the student (adapters included), none on the teacher."""
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert any(n.startswith("distiller.adapters.") for n in grads)
    bad = [n for n, g in grads.items() if not torch.isfinite(g).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"
    assert all(p.grad is None for p in model.teacher.parameters())


def expected_masks(n, shapes, cells):
    """Masks with ones at ``cells``: {(level, image): [(row_slice, col_slice), ...]}."""
    out = [torch.zeros((n, h, w)) for h, w in shapes]
    for (lvl, img), rects in cells.items():
        for rows, cols in rects:
            out[lvl][img, rows, cols] = 1
    return out


def assert_masks_equal(got, want):
    assert len(got) == len(want)
    for lvl, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (lvl, g.shape, w.shape)
        diff = (g != w).nonzero().tolist()
        assert not diff, f"level {lvl}: cells [img, row, col] differ: {diff[:10]}"


@pytest.mark.parametrize("mode", MODES)
def test_odd_sizes_padded_batch_masks_on_padded_features(models, mode):
    """61x77, 50x90 and an empty 33x45 image are padded to 64x96; masks live on that frame."""
    model = models[mode]
    batch = [
        # a 2x2 box inside one cell (P2); a 7x11 box at the image's bottom-right corner (P2)
        item(61, 77, [[44, 36, 46, 38], [70, 50, 77, 61]], seed=1),
        # 64x44 box -> P4 (sqrt 53 px / 8 -> 2.7); 20x20 box -> P3 (log2(20 / 8) = 1.3)
        item(50, 90, [[2, 3, 66, 47], [40, 10, 60, 30]], seed=2),
        item(33, 45, [], seed=3),  # no boxes: all background, padding included
    ]
    losses, seen = forward(model, batch)
    shapes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]  # 64x96 padded batch (size divisibility 32)
    assert seen["shapes"] == shapes
    want = expected_masks(
        3,
        shapes,
        {
            (0, 0): [
                (slice(9, 10), slice(11, 12)),  # floor(36/4)=9=floor(38/4), 11=floor(46/4): one cell
                (slice(12, 15), slice(17, 19)),
            ],  # rows 12..floor(61/4)=15, cols 17..floor(77/4)=19
            (2, 1): [(slice(0, 2), slice(0, 4))],  # rows 0..floor(47/16)=2, cols 0..floor(66/16)=4
            (1, 1): [(slice(1, 3), slice(5, 7))],  # rows 1..floor(30/8)=3, cols 5..floor(60/8)=7
        },
    )
    assert_masks_equal(seen["masks"], want)
    assert seen["masks"][0][0].sum() == 1 + 3 * 2

    assert set(DEFEAT_KEYS) <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_defeat_neck_obj"] > 0 and losses["loss_defeat_neck_bg"] > 0
    backward_ok(model, sum(losses.values()))


@pytest.mark.parametrize("mode", MODES)
def test_every_image_empty(models, mode):
    model = models[mode]
    batch = [item(64, 64, [], seed=4), item(61, 77, [], seed=5)]
    losses, seen = forward(model, batch)
    assert seen["shapes"] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(m.sum() == 0 and m.shape[0] == 2 for m in seen["masks"])
    assert all(torch.isfinite(v) for v in losses.values()), losses
    # No objects: the object terms are exactly 0 (not NaN from 0/0); background carries the loss.
    assert losses["loss_defeat_neck_obj"].item() == 0.0 and losses["loss_defeat_head_obj"].item() == 0.0
    assert losses["loss_defeat_neck_bg"] > 0 and losses["loss_defeat_head_bg"] > 0
    backward_ok(model, sum(losses.values()))


@pytest.mark.parametrize("mode", MODES)
def test_zero_area_boxes(models, mode):
    """Points and lines mark cells on P2 only (one cell for a point); DeFeat's losses stay finite.

    Detectron2's own RPN regression target for a zero-area GT box is log(0) (loss_rpn_loc = inf,
    plain GeneralizedRCNN alike); its DatasetMapper drops such boxes (filter_empty_instances), so
    the whole pipeline is checked on the filtered instances too.
    """
    model = models[mode]
    batch = [
        item(64, 64, [[20, 20, 20, 20], [10, 30, 40, 50]], seed=6),  # a point beside a normal box
        item(64, 64, [[5, 8, 5, 40], [33, 61, 60, 61], [63.5, 63.5, 63.5, 63.5]], seed=7),  # lines; corner point
    ]
    losses, seen = forward(model, batch)
    want = expected_masks(
        2,
        seen["shapes"],
        {
            (0, 0): [(slice(5, 6), slice(5, 6))],  # point (20, 20): one cell
            (1, 0): [(slice(3, 6), slice(1, 5))],  # 30x20 box -> P3 (log2(24.5 / 8) = 1.6)
            (0, 1): [
                (slice(2, 10), slice(1, 2)),  # vertical line x=5, y 8..40: one column
                (slice(15, 16), slice(8, 15)),  # horizontal line y=61, x 33..60: one row
                (slice(15, 16), slice(15, 16)),
            ],  # point on the last pixel: the last cell
        },
    )
    assert_masks_equal(seen["masks"], want)
    assert seen["masks"][0][0].sum() == 1
    defeat = {k: losses[k] for k in DEFEAT_KEYS}
    assert all(torch.isfinite(v) for v in defeat.values()), defeat
    backward_ok(model, sum(defeat.values()))

    for x in batch:  # as Detectron2's DatasetMapper does
        x["instances"] = filter_empty_instances(x["instances"])
    assert [len(x["instances"]) for x in batch] == [1, 0]
    losses, seen = forward(model, batch)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    backward_ok(model, sum(losses.values()))


@pytest.mark.parametrize("mode", MODES)
def test_a_thousand_boxes_per_image(models, mode):
    model = models[mode]
    boxes = [random_boxes(1000, 61, 77, seed=8), random_boxes(1000, 50, 90, seed=9)]
    batch = [item(61, 77, boxes[0], seed=10), item(50, 90, boxes[1], seed=11)]
    losses, seen = forward(model, batch)
    assert [len(b) for b in seen["boxes"]] == [1000, 1000]
    assert all(torch.equal(a, b) for a, b in zip(seen["boxes"], boxes))

    # Reference: paint each box by the formulas of docs/algorithm.md, one at a time.
    want = [torch.zeros((2, h, w)) for h, w in seen["shapes"]]
    for img, bs in enumerate(boxes):
        for x1, y1, x2, y2 in bs.tolist():
            area = (x2 - x1) * (y2 - y1)
            lvl = 0 if area <= 0 else min(max(math.floor(math.log2(math.sqrt(area) / 8.0)), 0), 4)
            s = STRIDES[lvl]
            lx, ly = math.floor(x1 / s), math.floor(y1 / s)
            want[lvl][img, ly : max(math.floor(y2 / s), ly + 1), lx : max(math.floor(x2 / s), lx + 1)] = 1
    assert_masks_equal(seen["masks"], want)
    assert all(m.sum() > 0 for m in seen["masks"][:3])  # the random sizes reach P2..P4

    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert all(losses[k] > 0 for k in DEFEAT_KEYS)
    backward_ok(model, sum(losses.values()))
