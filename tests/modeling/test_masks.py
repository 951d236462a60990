"""Tests for ``defeat.gt_masks`` against docs/algorithm.md, section 1.

The reference below is written from that document only: a slow per-image, per-box computation
with the ``math`` module in float64, painted box by box.
"""

import math

import numpy as np
import pytest
import torch

from defeat import gt_masks

STRIDES = [4, 8, 16, 32, 64]


# --------------------------------------------------------------------------------------
# Reference implementation (obviously correct, slow)
# --------------------------------------------------------------------------------------
def ref_level(x1, y1, x2, y2, num_levels, scale_base):
    w = x2 - x1
    h = y2 - y1
    area = w * h
    if area <= 0:
        return 0
    lvl = math.floor(math.log2(math.sqrt(area) / scale_base))
    return min(max(lvl, 0), num_levels - 1)


def ref_cell_range(a1, a2, stride, size):
    """Half-open [lo, hi) cell range of one axis, clipped to [0, size]."""
    lo = math.floor(a1 / stride)
    hi = max(math.floor(a2 / stride), lo + 1)
    lo = min(max(lo, 0), size)
    hi = min(max(hi, 0), size)
    return lo, hi


def ref_gt_masks(boxes, feature_shapes, strides, assignment="scale", scale_base=56.0):
    num_levels = len(strides)
    n = len(boxes)
    out = [np.zeros((n, h, w), dtype=np.float64) for (h, w) in feature_shapes]
    for i, b in enumerate(boxes):
        for x1, y1, x2, y2 in b.tolist():  # python floats (float64, exact copies)
            if assignment == "scale":
                levels = [ref_level(x1, y1, x2, y2, num_levels, scale_base)]
            elif assignment == "all":
                levels = list(range(num_levels))
            else:
                raise ValueError(assignment)
            for lvl in levels:
                hl, wl = feature_shapes[lvl]
                s = strides[lvl]
                c0, c1 = ref_cell_range(x1, x2, s, wl)
                r0, r1 = ref_cell_range(y1, y2, s, hl)
                if r0 < r1 and c0 < c1:
                    # paint the box's cell rectangle (union semantics: set to 1, never add)
                    out[lvl][i, r0:r1, c0:c1] = 1.0
    return [torch.from_numpy(m) for m in out]


def feature_shapes_for(height, width, strides):
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def near_level_boundary(x1, y1, x2, y2, scale_base, margin=1e-3):
    area = (x2 - x1) * (y2 - y1)
    if area <= 0:
        return False
    v = math.log2(math.sqrt(area) / scale_base)
    return abs(v - round(v)) < margin


# --------------------------------------------------------------------------------------
# Random case generation
# --------------------------------------------------------------------------------------
def _u(g, lo, hi):
    return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()


def _randint(g, lo, hi):  # inclusive lo, exclusive hi
    return int(torch.randint(lo, hi, (), generator=g).item())


def random_box(g, height, width, scale_base):
    """One box of a random kind: normal, tiny, zero-area, border-crossing, huge, outside."""
    while True:
        kind = _randint(g, 0, 7)
        if kind in (0, 1):  # normal, log-uniform size, arbitrary aspect
            side = math.exp(_u(g, math.log(2.0), math.log(1.2 * max(height, width))))
            ar = math.exp(_u(g, math.log(0.25), math.log(4.0)))
            w, h = side * math.sqrt(ar), side / math.sqrt(ar)
            cx, cy = _u(g, 0, width), _u(g, 0, height)
        elif kind == 2:  # tiny, sub-stride
            w, h = _u(g, 0.01, 3.9), _u(g, 0.01, 3.9)
            cx, cy = _u(g, 0, width), _u(g, 0, height)
        elif kind == 3:  # zero area (one or both sides 0)
            sub = _randint(g, 0, 3)
            w = 0.0 if sub in (0, 2) else _u(g, 1, 300)
            h = 0.0 if sub in (1, 2) else _u(g, 1, 300)
            cx, cy = _u(g, 0, width), _u(g, 0, height)
        elif kind == 4:  # crossing / touching the border: negative coords or beyond the image
            w, h = _u(g, 5, 1.5 * width), _u(g, 5, 1.5 * height)
            cx = _u(g, -0.3 * width, 0.2 * width) if _randint(g, 0, 2) else _u(g, 0.8 * width, 1.3 * width)
            cy = _u(g, -0.3 * height, 0.2 * height) if _randint(g, 0, 2) else _u(g, 0.8 * height, 1.3 * height)
        elif kind == 5:  # huge
            w, h = _u(g, 900, 5000), _u(g, 900, 5000)
            cx, cy = _u(g, 0, width), _u(g, 0, height)
        else:  # entirely outside the image (left/top or right/bottom)
            w, h = _u(g, 1, 200), _u(g, 1, 200)
            if _randint(g, 0, 2):
                cx, cy = -w / 2 - _u(g, 0, 100), _u(g, 0, height)
            else:
                cx, cy = _u(g, 0, width), height + h / 2 + _u(g, 0, 100)
        box = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=torch.float32)
        if kind == 3:  # make zero sides exactly zero in float32
            if w == 0.0:
                box[2] = box[0]
            if h == 0.0:
                box[3] = box[1]
        if kind == 4 and _randint(g, 0, 3) == 0:  # exactly touching the border
            box[0] = 0.0
            box[2] = max(float(box[2]), 1.0)
            box[3] = float(height)
        x1, y1, x2, y2 = box.tolist()
        if x2 < x1 or y2 < y1:
            continue
        # float32 (implementation) vs float64 (reference) could disagree only within a
        # hair of a level boundary; keep such boxes out of the random cases (boundaries
        # are tested exactly below).
        if near_level_boundary(x1, y1, x2, y2, scale_base):
            continue
        return box


def random_case(seed, scale_base):
    g = torch.Generator().manual_seed(seed)
    n = _randint(g, 1, 5)
    height, width = _randint(g, 64, 1100), _randint(g, 64, 1100)
    boxes = []
    for i in range(n):
        k = [0, 1, 3, 10, 40][_randint(g, 0, 5)]
        if i == 0 and n > 1:
            k = 0  # always have an empty image in multi-image batches
        if k == 0:
            boxes.append(torch.zeros((0, 4), dtype=torch.float32))
        else:
            boxes.append(torch.stack([random_box(g, height, width, scale_base) for _ in range(k)]))
    return boxes, height, width


def assert_masks_equal(got, ref):
    assert isinstance(got, (list, tuple))
    assert len(got) == len(ref)
    for lvl, (m, r) in enumerate(zip(got, ref)):
        assert tuple(m.shape) == tuple(r.shape), f"level {lvl}: shape {tuple(m.shape)} != {tuple(r.shape)}"
        diff = m.double() != r
        if diff.any():
            idx = diff.nonzero()[:5].tolist()
            raise AssertionError(
                f"level {lvl}: {int(diff.sum())} cells differ, first [n,y,x]={idx}; "
                f"got {[float(m[tuple(j)]) for j in idx]} ref {[float(r[tuple(j)]) for j in idx]}"
            )


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("assignment", ["scale", "all"])
@pytest.mark.parametrize("scale_base", [56.0, 40.0])
@pytest.mark.parametrize("seed", range(12))
def test_random_against_reference(seed, assignment, scale_base):
    boxes, height, width = random_case(1000 * seed + 7, scale_base)
    shapes = feature_shapes_for(height, width, STRIDES)
    got = gt_masks(boxes, shapes, STRIDES, assignment=assignment, scale_base=scale_base)
    ref = ref_gt_masks(boxes, shapes, STRIDES, assignment=assignment, scale_base=scale_base)
    assert_masks_equal(got, ref)


@pytest.mark.parametrize("assignment", ["scale", "all"])
@pytest.mark.parametrize("seed", range(4))
def test_random_three_levels_default_scale_base(seed, assignment):
    """Fewer levels (L=3): clamping to L-1 uses len(strides); default scale_base."""
    strides = [8, 16, 32]
    boxes, height, width = random_case(77 + seed, 56.0)
    shapes = feature_shapes_for(height, width, strides)
    got = gt_masks(boxes, shapes, strides, assignment=assignment)
    ref = ref_gt_masks(boxes, shapes, strides, assignment=assignment, scale_base=56.0)
    assert_masks_equal(got, ref)


def test_feature_maps_smaller_than_image_are_clipped():
    """Feature shapes given by the caller are authoritative; cells beyond them are clipped."""
    boxes = [torch.tensor([[0.0, 0.0, 400.0, 400.0], [300.0, 10.0, 399.0, 399.0], [5.0, 5.0, 9.0, 9.0]])]
    shapes = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]  # covers only 256x256 px
    for assignment in ("scale", "all"):
        got = gt_masks(boxes, shapes, STRIDES, assignment=assignment)
        ref = ref_gt_masks(boxes, shapes, STRIDES, assignment=assignment)
        assert_masks_equal(got, ref)


@pytest.mark.parametrize(
    "side,level",
    [(111.9, 0), (112.0, 1), (223.9, 1), (224.0, 2), (447.9, 2), (448.0, 3), (895.9, 3), (896.0, 4), (2000.0, 4)],
)
def test_level_boundaries(side, level):
    """docs/algorithm.md: P2 below 112 px, P3 [112, 224), P4 [224, 448), P5 [448, 896), P6 from 896 px."""
    height = width = 2048
    x0 = 8.0
    boxes = [torch.tensor([[x0, x0, x0 + side, x0 + side]], dtype=torch.float32)]
    shapes = feature_shapes_for(height, width, STRIDES)
    masks = gt_masks(boxes, shapes, STRIDES)
    assert len(masks) == 5
    for lvl, m in enumerate(masks):
        if lvl == level:
            assert m.sum() > 0, f"side {side}: expected cells on P{level + 2}"
            s = STRIDES[lvl]
            lo = math.floor(x0 / s)
            hi = max(math.floor((x0 + side) / s), lo + 1)
            expected = torch.zeros_like(m)
            expected[0, lo:hi, lo:hi] = 1
            assert torch.equal(m, expected)
        else:
            assert m.sum() == 0, f"side {side}: P{lvl + 2} should be empty, level should be P{level + 2}"


def test_level_boundaries_scale_base():
    """Non-default scale_base moves the boundaries: base 32 -> P3 starts at 64 px."""
    shapes = feature_shapes_for(1024, 1024, STRIDES)
    for side, level in [(63.9, 0), (64.0, 1), (128.0, 2), (256.0, 3), (512.0, 4), (1000.0, 4)]:
        masks = gt_masks([torch.tensor([[0.0, 0.0, side, side]])], shapes, STRIDES, scale_base=32.0)
        nonempty = [lvl for lvl, m in enumerate(masks) if m.sum() > 0]
        assert nonempty == [level], (side, nonempty)


def test_zero_area_box_goes_to_level0_and_marks_one_cell():
    shapes = feature_shapes_for(256, 256, STRIDES)
    # degenerate point, a horizontal line, a vertical line
    boxes = [
        torch.tensor([[50.0, 50.0, 50.0, 50.0]]),
        torch.tensor([[10.0, 100.0, 200.0, 100.0]]),
        torch.tensor([[100.0, 10.0, 100.0, 200.0]]),
    ]
    masks = gt_masks(boxes, shapes, STRIDES)
    for lvl in range(1, 5):
        assert masks[lvl].sum() == 0
    m = masks[0]
    assert m[0].sum() == 1 and m[0, 12, 12] == 1  # floor(50/4)=12, one cell
    assert m[1].sum() == math.floor(200 / 4) - math.floor(10 / 4)  # one row
    assert m[1, 25].sum() == m[1].sum()
    assert m[2].sum() == math.floor(200 / 4) - math.floor(10 / 4)  # one column
    assert m[2, :, 25].sum() == m[2].sum()


@pytest.mark.parametrize("assignment", ["scale", "all"])
def test_output_contract(assignment):
    g = torch.Generator().manual_seed(3)
    height, width = 320, 480
    shapes = feature_shapes_for(height, width, STRIDES)
    boxes = [
        torch.stack([random_box(g, height, width, 56.0) for _ in range(20)]),
        torch.zeros((0, 4)),
        torch.tensor([[10.0, 10.0, 150.0, 150.0], [20.0, 20.0, 160.0, 160.0], [15.0, 15.0, 155.0, 155.0]]),
    ]
    masks = gt_masks(boxes, shapes, STRIDES, assignment=assignment)
    assert isinstance(masks, (list, tuple)) and len(masks) == len(STRIDES)
    for m, (h, w) in zip(masks, shapes):
        assert isinstance(m, torch.Tensor)
        assert m.dtype == torch.float32
        assert tuple(m.shape) == (3, h, w)
        assert m.device == boxes[0].device
        assert bool(((m == 0) | (m == 1)).all()), "values must be 0 or 1"
        assert m[1].sum() == 0, "image without boxes must be all background"
    # overlapping boxes: union, still exactly 1 (not a count)
    lvl = 1 if assignment == "scale" else 0
    assert masks[lvl][2].max() == 1
    assert masks[lvl][2, 20 // STRIDES[lvl], 20 // STRIDES[lvl]] == 1


def test_all_images_empty():
    shapes = feature_shapes_for(200, 300, STRIDES)
    boxes = [torch.zeros((0, 4)), torch.zeros((0, 4))]
    for assignment in ("scale", "all"):
        masks = gt_masks(boxes, shapes, STRIDES, assignment=assignment)
        assert len(masks) == 5
        for m, (h, w) in zip(masks, shapes):
            assert tuple(m.shape) == (2, h, w)
            assert m.is_floating_point()
            assert m.sum() == 0


@pytest.mark.parametrize("assignment", ["scale", "all"])
def test_every_box_inside_image_marks_a_cell(assignment):
    """A box inside the image marks >= 1 cell on its level (or on every level with "all")."""
    g = torch.Generator().manual_seed(11)
    height, width = 517, 389  # not multiples of the strides
    shapes = feature_shapes_for(height, width, STRIDES)
    n_checked = 0
    for _ in range(60):
        kind = _randint(g, 0, 3)
        if kind == 0:  # tiny / zero area anywhere, including on the last pixel
            x1, y1 = _u(g, 0, width), _u(g, 0, height)
            x2, y2 = min(x1 + _u(g, 0, 3), width), min(y1 + _u(g, 0, 3), height)
        elif kind == 1:
            x1, y1 = _u(g, 0, width - 1), _u(g, 0, height - 1)
            x2, y2 = _u(g, x1, width), _u(g, y1, height)
        else:  # whole image
            x1, y1, x2, y2 = 0.0, 0.0, float(width), float(height)
        box = torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)
        if box[0, 0] >= width or box[0, 1] >= height:
            continue
        masks = gt_masks([box], shapes, STRIDES, assignment=assignment)
        sums = [float(m.sum()) for m in masks]
        if assignment == "all":
            assert all(s >= 1 for s in sums), (box, sums)
        else:
            assert sum(1 for s in sums if s > 0) == 1, (box, sums)
        n_checked += 1
    assert n_checked > 40


def test_no_leak_between_images():
    shapes = feature_shapes_for(256, 256, STRIDES)
    b = torch.tensor([[30.0, 40.0, 90.0, 100.0]])
    masks = gt_masks([torch.zeros((0, 4)), b, torch.zeros((0, 4))], shapes, STRIDES, assignment="all")
    single = gt_masks([b], shapes, STRIDES, assignment="all")
    for m, s in zip(masks, single):
        assert m[0].sum() == 0 and m[2].sum() == 0
        assert torch.equal(m[1], s[0])


@pytest.mark.parametrize("assignment", ["scale", "all"])
def test_many_boxes_correct_at_scale(assignment):
    """Hundreds of boxes per image (the vectorised path) give exactly the reference result."""
    g = torch.Generator().manual_seed(2024)
    height, width = 800, 1088
    shapes = feature_shapes_for(height, width, STRIDES)
    boxes = [
        torch.stack([random_box(g, height, width, 56.0) for _ in range(500)]),
        torch.zeros((0, 4)),
        torch.stack([random_box(g, height, width, 56.0) for _ in range(300)]),
    ]
    got = gt_masks(boxes, shapes, STRIDES, assignment=assignment)
    ref = ref_gt_masks(boxes, shapes, STRIDES, assignment=assignment)
    assert_masks_equal(got, ref)


def test_box_order_does_not_matter():
    g = torch.Generator().manual_seed(5)
    shapes = feature_shapes_for(400, 400, STRIDES)
    b = torch.stack([random_box(g, 400, 400, 56.0) for _ in range(50)])
    perm = torch.randperm(50, generator=g)
    m1 = gt_masks([b], shapes, STRIDES)
    m2 = gt_masks([b[perm]], shapes, STRIDES)
    for a, c in zip(m1, m2):
        assert torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():
    boxes, height, width = random_case(99, 56.0)
    shapes = feature_shapes_for(height, width, STRIDES)
    cpu = gt_masks(boxes, shapes, STRIDES)
    gpu = gt_masks([b.cuda() for b in boxes], shapes, STRIDES)
    for c, d in zip(cpu, gpu):
        assert d.device.type == "cuda"
        assert torch.equal(c, d.cpu())


def test_boxes_straddling_top_left_border_follow_formula():
    """Boxes starting at negative coordinates follow the documented formula literally: floor
    (not truncation) of x1/s, then clipping. Note: a box such as [-2, -2, 1, 1] on stride 4
    gets lx = floor(-0.5) = -1, rx = max(floor(0.25), 0) = 0, i.e. *no* cell, although it
    overlaps pixel (0, 0) -- the documented "every box marks at least one cell" holds only for
    boxes inside the map (x1, y1 >= 0)."""
    shapes = feature_shapes_for(128, 128, STRIDES)
    boxes = [
        torch.tensor(
            [
                [-2.0, -2.0, 1.0, 1.0],  # ends inside cell 0: formula gives no cell
                [-3.0, 40.0, 2.0, 44.0],  # straddles the left border only
                [-9.0, -9.0, 5.0, 3.0],  # lx = -3 -> clipped; rx = 1
                [-150.0, -20.0, -1.0, 30.0],  # fully left of the image
                [120.0, 120.0, 300.0, 300.0],
            ]
        )
    ]  # beyond bottom-right
    for assignment in ("scale", "all"):
        got = gt_masks(boxes, shapes, STRIDES, assignment=assignment)
        ref = ref_gt_masks(boxes, shapes, STRIDES, assignment=assignment)
        assert_masks_equal(got, ref)
