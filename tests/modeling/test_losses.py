"""Tests for the DeFeat losses against docs/algorithm.md, sections 2 and 3.

References are written from that document only: loops over levels / RoIs / anchors in float64
(``math`` module for the per-RoI and per-anchor KL terms).
"""

import math

import pytest
import torch
from torch import nn

from defeat import decoupled_feature_loss, decoupled_kl_loss, decoupled_sigmoid_kl_loss, standardize_channels


def _close(got, ref, rtol=1e-4, atol=1e-6):
    got = float(got.detach()) if isinstance(got, torch.Tensor) else float(got)
    assert math.isfinite(got), got
    assert abs(got - ref) <= atol + rtol * abs(ref), f"got {got!r}, reference {ref!r}"


def _assert_scalar(x):
    assert isinstance(x, torch.Tensor)
    assert x.dim() == 0, f"loss should be a scalar tensor, got shape {tuple(x.shape)}"


# ======================================================================================
# Section 2: decoupled_feature_loss
# ======================================================================================
def ref_feature_loss(student, teacher, masks):
    """obj_l = sum(M (S-T)^2) / max(1, 2 C sum M); bg_l with 1-M; mean over levels."""
    objs, bgs = [], []
    for s, t, m in zip(student, teacher, masks):
        s, t, m = s.detach().double(), t.detach().double(), m.detach().double()
        c = s.shape[1]
        sq = ((s - t) ** 2).sum(dim=1)  # [N, H, W], channel sum
        obj_num = float((m * sq).sum())
        bg_num = float(((1 - m) * sq).sum())
        objs.append(obj_num / max(1.0, 2.0 * c * float(m.sum())))
        bgs.append(bg_num / max(1.0, 2.0 * c * float((1 - m).sum())))
    return sum(objs) / len(objs), sum(bgs) / len(bgs)


def make_feature_case(
    seed, n=2, c=8, shapes=((24, 20), (12, 10), (6, 5), (3, 3)), mask_kinds=None, dtype=torch.float32
):
    g = torch.Generator().manual_seed(seed)
    mask_kinds = mask_kinds or ["random"] * len(shapes)
    student, teacher, masks = [], [], []
    for (h, w), kind in zip(shapes, mask_kinds):
        student.append(torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype))
        teacher.append(torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(dtype))
        if kind == "zeros":
            m = torch.zeros(n, h, w)
        elif kind == "ones":
            m = torch.ones(n, h, w)
        elif kind == "single":  # one object cell: 2*C*sum(M) = 2C > 1
            m = torch.zeros(n, h, w)
            m[0, 0, 0] = 1
        else:
            m = (torch.rand(n, h, w, generator=g) < 0.3).float()
        masks.append(m.to(dtype))
    return student, teacher, masks


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "mask_kinds",
    [
        None,
        ["random", "zeros", "ones", "random"],
        ["zeros", "zeros", "zeros", "zeros"],
        ["ones", "ones", "single", "random"],
    ],
)
def test_feature_loss_matches_reference(seed, mask_kinds):
    s, t, m = make_feature_case(seed, mask_kinds=mask_kinds)
    obj, bg = decoupled_feature_loss(s, t, m)
    _assert_scalar(obj)
    _assert_scalar(bg)
    ref_obj, ref_bg = ref_feature_loss(s, t, m)
    _close(obj, ref_obj)
    _close(bg, ref_bg)


def test_feature_loss_level_mask_empty_and_full_values():
    """All-zero mask: obj_l = 0 (normaliser max(1, 0) = 1), all-one mask: bg_l = 0; both levels
    still count in the mean over levels."""
    s, t, m = make_feature_case(1, shapes=((8, 8), (4, 4)), mask_kinds=["zeros", "ones"])
    obj, bg = decoupled_feature_loss(s, t, m)
    c = s[0].shape[1]
    sq1 = ((s[1].double() - t[1].double()) ** 2).sum()
    sq0 = ((s[0].double() - t[0].double()) ** 2).sum()
    # obj: level 0 contributes 0, level 1 contributes sq1 / (2 C N H W); mean over 2 levels
    _close(obj, 0.5 * float(sq1) / (2 * c * m[1].numel()))
    _close(bg, 0.5 * float(sq0) / (2 * c * m[0].numel()))


def test_feature_loss_normaliser_below_one():
    """max(1, .): the normaliser never goes below 1 (C = 1 and a tiny fractional mask is not
    possible with 0/1 masks, so use C=1 with no object cells: obj = 0 exactly, not nan)."""
    s, t, m = make_feature_case(2, c=1, shapes=((5, 7),), mask_kinds=["zeros"])
    obj, bg = decoupled_feature_loss(s, t, m)
    assert float(obj) == 0.0
    ref_obj, ref_bg = ref_feature_loss(s, t, m)
    _close(bg, ref_bg)


def test_feature_loss_different_channels_and_batch():
    for seed, (n, c) in enumerate([(1, 1), (3, 16), (2, 256)]):
        s, t, m = make_feature_case(10 + seed, n=n, c=c, shapes=((9, 13), (5, 7), (3, 4), (2, 2), (1, 1)))
        obj, bg = decoupled_feature_loss(s, t, m)
        ref_obj, ref_bg = ref_feature_loss(s, t, m)
        _close(obj, ref_obj)
        _close(bg, ref_bg)


def test_feature_loss_zero_when_equal():
    s, _, m = make_feature_case(3, mask_kinds=["random", "zeros", "ones", "random"])
    t = [x.clone() for x in s]
    obj, bg = decoupled_feature_loss(s, t, m)
    assert float(obj) == 0.0 and float(bg) == 0.0


def test_feature_loss_gradients_student_only():
    s, t, m = make_feature_case(4)
    s = [x.clone().requires_grad_(True) for x in s]
    t = [x.clone().requires_grad_(True) for x in t]
    obj, bg = decoupled_feature_loss(s, t, m)
    (obj + bg).backward()
    for x in s:
        assert x.grad is not None and x.grad.abs().sum() > 0
    for x in t:
        assert x.grad is None, "teacher features must be detached (no gradient)"


@pytest.mark.parametrize("which", ["obj", "bg"])
def test_feature_loss_gradient_analytic(which):
    """d obj / d S_l = (1/L) 2 M (S-T) / max(1, 2 C sum M); likewise bg with 1-M."""
    s, t, m = make_feature_case(5, mask_kinds=["random", "zeros", "ones", "single"])
    s = [x.clone().requires_grad_(True) for x in s]
    obj, bg = decoupled_feature_loss(s, t, m)
    (obj if which == "obj" else bg).backward()
    num_levels = len(s)
    for sl, tl, ml in zip(s, t, m):
        c = sl.shape[1]
        w = ml.double() if which == "obj" else 1 - ml.double()
        denom = max(1.0, 2.0 * c * float(w.sum()))
        expected = 2 * w[:, None] * (sl.detach().double() - tl.double()) / denom / num_levels
        assert torch.allclose(sl.grad.double(), expected, rtol=1e-4, atol=1e-9)


def test_feature_loss_gradient_through_adapter():
    g = torch.Generator().manual_seed(7)
    s, t, m = make_feature_case(7, c=6)
    adapter = nn.Conv2d(4, 6, 3, padding=1)
    with torch.no_grad():
        adapter.weight.copy_(torch.randn(adapter.weight.shape, generator=g) * 0.1)
    raw = [torch.randn(x.shape[0], 4, x.shape[2], x.shape[3], generator=g) for x in s]
    adapted = [adapter(x) for x in raw]
    obj, bg = decoupled_feature_loss(adapted, t, m)
    (4.0 * obj + 16.0 * bg).backward()
    assert adapter.weight.grad is not None and adapter.weight.grad.abs().sum() > 0
    assert adapter.bias.grad is not None and adapter.bias.grad.abs().sum() > 0
    ref_obj, ref_bg = ref_feature_loss(adapted, t, m)
    _close(obj, ref_obj)
    _close(bg, ref_bg)


def test_feature_loss_obj_bg_order():
    """Differences only inside the objects -> bg == 0, obj > 0 (and vice versa)."""
    s, t, m = make_feature_case(8, mask_kinds=["random", "random", "single", "random"])
    t_obj = [torch.where(ml[:, None].bool(), tl, sl) for sl, tl, ml in zip(s, t, m)]
    obj, bg = decoupled_feature_loss(s, t_obj, m)
    assert float(obj) > 0 and float(bg) == 0.0
    t_bg = [torch.where(ml[:, None].bool(), sl, tl) for sl, tl, ml in zip(s, t, m)]
    obj, bg = decoupled_feature_loss(s, t_bg, m)
    assert float(obj) == 0.0 and float(bg) > 0


# ======================================================================================
# Section 3: decoupled_kl_loss (softmax) and decoupled_sigmoid_kl_loss
# ======================================================================================
def _log_softmax_row(row, temp):
    z = [v / temp for v in row]
    mx = max(z)
    lse = mx + math.log(sum(math.exp(v - mx) for v in z))
    return [v - lse for v in z]


def ref_kl_loss(student, teacher, is_object, temp):
    s_rows, t_rows, flags = student.tolist(), teacher.tolist(), is_object.tolist()
    sums, counts = {True: 0.0, False: 0.0}, {True: 0, False: 0}
    for srow, trow, flag in zip(s_rows, t_rows, flags):
        ls, lt = _log_softmax_row(srow, temp), _log_softmax_row(trow, temp)
        kl = sum(math.exp(a) * (a - b) for a, b in zip(lt, ls))
        sums[bool(flag)] += kl
        counts[bool(flag)] += 1
    obj = temp**2 * sums[True] / max(1, counts[True])
    bg = temp**2 * sums[False] / max(1, counts[False])
    return obj, bg


def _log_sigmoid(x):
    # stable log(sigmoid(x)) in float64
    if x >= 0:
        return -math.log1p(math.exp(-x))
    return x - math.log1p(math.exp(x))


def ref_sigmoid_kl_loss(student, teacher, is_object, temp):
    s_rows, t_rows, flags = student.tolist(), teacher.tolist(), is_object.tolist()
    sums, counts = {True: 0.0, False: 0.0}, {True: 0, False: 0}
    for srow, trow, flag in zip(s_rows, t_rows, flags):
        kl = 0.0
        for sv, tv in zip(srow, trow):
            lp, l1p = _log_sigmoid(tv / temp), _log_sigmoid(-tv / temp)  # teacher p, 1-p
            lq, l1q = _log_sigmoid(sv / temp), _log_sigmoid(-sv / temp)  # student q, 1-q
            kl += math.exp(lp) * (lp - lq) + math.exp(l1p) * (l1p - l1q)
        sums[bool(flag)] += kl
        counts[bool(flag)] += 1
    obj = temp**2 * sums[True] / max(1, counts[True])
    bg = temp**2 * sums[False] / max(1, counts[False])
    return obj, bg


LOSSES = {
    "softmax": (decoupled_kl_loss, ref_kl_loss),
    "sigmoid": (decoupled_sigmoid_kl_loss, ref_sigmoid_kl_loss),
}


def make_logit_case(seed, r=40, k=7, frac_obj=0.3, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(r, k, generator=g) * scale
    t = torch.randn(r, k, generator=g) * scale
    is_obj = torch.rand(r, generator=g) < frac_obj
    return s, t, is_obj


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("seed", range(3))
def test_kl_matches_reference(kind, temperature, seed):
    fn, ref = LOSSES[kind]
    s, t, is_obj = make_logit_case(seed)
    obj, bg = fn(s, t, is_obj, temperature=temperature)
    _assert_scalar(obj)
    _assert_scalar(bg)
    ref_obj, ref_bg = ref(s, t, is_obj, temperature)
    _close(obj, ref_obj)
    _close(bg, ref_bg)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_kl_default_temperature_is_one(kind):
    fn, ref = LOSSES[kind]
    s, t, is_obj = make_logit_case(21)
    obj, bg = fn(s, t, is_obj)
    ref_obj, ref_bg = ref(s, t, is_obj, 1.0)
    _close(obj, ref_obj)
    _close(bg, ref_bg)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("group", ["all_obj", "all_bg", "empty", "single_obj"])
def test_kl_degenerate_groups(kind, group):
    fn, ref = LOSSES[kind]
    s, t, _ = make_logit_case(30, r=12)
    if group == "all_obj":
        is_obj = torch.ones(12, dtype=torch.bool)
    elif group == "all_bg":
        is_obj = torch.zeros(12, dtype=torch.bool)
    elif group == "single_obj":
        is_obj = torch.zeros(12, dtype=torch.bool)
        is_obj[5] = True
    else:
        s, t, is_obj = s[:0], t[:0], torch.zeros(0, dtype=torch.bool)
    for temperature in (1.0, 2.0):
        obj, bg = fn(s, t, is_obj, temperature=temperature)
        assert math.isfinite(float(obj.detach())) and math.isfinite(float(bg.detach()))
        ref_obj, ref_bg = ref(s, t, is_obj, temperature)
        _close(obj, ref_obj)
        _close(bg, ref_bg)
        if group in ("all_bg", "empty"):
            assert float(obj) == 0.0
        if group in ("all_obj", "empty"):
            assert float(bg) == 0.0


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_kl_empty_backward(kind):
    """R = 0 (e.g. no RoIs / anchors): finite zero losses that can still be backpropagated."""
    fn, _ = LOSSES[kind]
    s = torch.zeros(0, 5, requires_grad=True)
    t = torch.zeros(0, 5)
    obj, bg = fn(s, t, torch.zeros(0, dtype=torch.bool))
    assert float(obj.detach()) == 0.0 and float(bg.detach()) == 0.0
    assert obj.requires_grad and bg.requires_grad  # still in the graph: a step with no RoIs must not fail
    (obj + bg).backward()
    assert s.grad is not None and s.grad.shape == (0, 5)


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_zero_when_equal(kind, temperature):
    fn, _ = LOSSES[kind]
    s, _, is_obj = make_logit_case(40)
    obj, bg = fn(s, s.clone(), is_obj, temperature=temperature)
    assert abs(float(obj)) < 1e-6 and abs(float(bg)) < 1e-6


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_kl_nonnegative(kind):
    fn, _ = LOSSES[kind]
    for seed in range(5):
        s, t, is_obj = make_logit_case(50 + seed, scale=10.0)
        obj, bg = fn(s, t, is_obj, temperature=2.0)
        assert float(obj) >= -1e-6 and float(bg) >= -1e-6


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_kl_output_order_obj_bg(kind):
    """Logits differ only on object RoIs -> (obj > 0, bg == 0); and the reverse."""
    fn, _ = LOSSES[kind]
    s, t, is_obj = make_logit_case(60)
    assert is_obj.any() and (~is_obj).any()
    t_obj = torch.where(is_obj[:, None], t, s)
    obj, bg = fn(s, t_obj, is_obj)
    assert float(obj) > 1e-3 and abs(float(bg)) < 1e-6
    t_bg = torch.where(is_obj[:, None], s, t)
    obj, bg = fn(s, t_bg, is_obj)
    assert abs(float(obj)) < 1e-6 and float(bg) > 1e-3


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_kl_teacher_detached_student_gets_grad(kind):
    fn, _ = LOSSES[kind]
    s, t, is_obj = make_logit_case(70)
    s.requires_grad_(True)
    t.requires_grad_(True)
    obj, bg = fn(s, t, is_obj, temperature=2.0)
    (2.0 * obj + 2.0 * bg).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None, "teacher logits must be detached (no gradient)"


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_gradient_analytic(kind, temperature):
    """d/ds of T^2 KL(p_t || p_s(s/T)) = T (p_s - p_t), divided by the group count.
    (Softmax: per row over classes; sigmoid: per class with p = sigmoid(./T).)"""
    fn, _ = LOSSES[kind]
    s, t, is_obj = make_logit_case(80)
    s.requires_grad_(True)
    obj, bg = fn(s, t, is_obj, temperature=temperature)
    (obj + 3.0 * bg).backward()
    sd, td = s.detach().double(), t.double()
    if kind == "softmax":
        ps, pt = torch.softmax(sd / temperature, dim=1), torch.softmax(td / temperature, dim=1)
    else:
        ps, pt = torch.sigmoid(sd / temperature), torch.sigmoid(td / temperature)
    n_obj, n_bg = int(is_obj.sum()), int((~is_obj).sum())
    weight = torch.where(is_obj, 1.0 / max(1, n_obj), 3.0 / max(1, n_bg)).double()[:, None]
    expected = temperature * (ps - pt) * weight
    assert torch.allclose(s.grad.double(), expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_sigmoid_kl_large_logits_stable(temperature):
    g = torch.Generator().manual_seed(100)
    a, k = 30, 5
    sign_s = torch.randint(0, 2, (a, k), generator=g).float() * 2 - 1
    sign_t = torch.randint(0, 2, (a, k), generator=g).float() * 2 - 1
    s = (50.0 * sign_s).requires_grad_(True)
    t = 50.0 * sign_t
    t[0] = 80.0
    s.data[1] = -80.0
    is_obj = torch.rand(a, generator=g) < 0.5
    obj, bg = decoupled_sigmoid_kl_loss(s, t, is_obj, temperature=temperature)
    assert math.isfinite(float(obj.detach())) and math.isfinite(float(bg.detach()))
    ref_obj, ref_bg = ref_sigmoid_kl_loss(s.detach(), t, is_obj, temperature)
    _close(obj, ref_obj, rtol=1e-3, atol=1e-3)
    _close(bg, ref_bg, rtol=1e-3, atol=1e-3)
    (obj + bg).backward()
    assert torch.isfinite(s.grad).all()
    # equal large logits: exactly (numerically) zero, not nan
    obj, bg = decoupled_sigmoid_kl_loss(t, t.clone(), is_obj, temperature=temperature)
    assert abs(float(obj)) < 1e-5 and abs(float(bg)) < 1e-5


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_softmax_kl_large_logits_stable(temperature):
    g = torch.Generator().manual_seed(101)
    s = (torch.randn(20, 6, generator=g) * 60.0).requires_grad_(True)
    t = torch.randn(20, 6, generator=g) * 60.0
    is_obj = torch.rand(20, generator=g) < 0.5
    obj, bg = decoupled_kl_loss(s, t, is_obj, temperature=temperature)
    assert math.isfinite(float(obj.detach())) and math.isfinite(float(bg.detach()))
    ref_obj, ref_bg = ref_kl_loss(s.detach(), t, is_obj, temperature)
    _close(obj, ref_obj, rtol=1e-3, atol=1e-3)
    _close(bg, ref_bg, rtol=1e-3, atol=1e-3)
    (obj + bg).backward()
    assert torch.isfinite(s.grad).all()


def test_sigmoid_kl_valid_mask_equals_indexing_the_valid_entries():
    """``valid`` leaves entries out of both groups without indexing: same values and gradients
    as indexing them out, and a NaN in a left-out entry does not leak in."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(30, 4, generator=g) * 3
    t = torch.randn(30, 4, generator=g) * 3
    is_obj = torch.rand(30, generator=g) < 0.3
    valid = torch.rand(30, generator=g) < 0.7
    t_nan = t.clone()
    t_nan[~valid] = float("nan")
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    masked = decoupled_sigmoid_kl_loss(s1, t_nan, is_obj & valid, 2.0, valid=valid)
    indexed = decoupled_sigmoid_kl_loss(s2[valid], t[valid], is_obj[valid], 2.0)
    for a, b in zip(masked, indexed):
        assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-6)
    sum(masked).backward()
    sum(indexed).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-7) and (s1.grad[~valid] == 0).all()


def test_fp16_inputs_are_computed_in_fp32_without_overflow():
    """Under AMP the features/logits arrive in fp16: squares of 300 (9e4) overflow fp16's 65504,
    so the losses must upcast first. Values and gradients equal the fp32 computation."""
    g = torch.Generator().manual_seed(5)
    s32 = torch.randn(2, 3, 4, 4, generator=g) * 300
    t32 = torch.randn(2, 3, 4, 4, generator=g) * 300
    m = (torch.rand(2, 4, 4, generator=g) < 0.5).float()
    s16 = s32.half().requires_grad_(True)
    ref_in = s16.detach().float().requires_grad_(True)
    got = decoupled_feature_loss([s16], [t32.half()], [m])
    ref = decoupled_feature_loss([ref_in], [t32.half().float()], [m])
    for a, b in zip(got, ref):
        assert a.dtype == torch.float32 and torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-6)
    sum(got).backward()
    sum(ref).backward()
    assert s16.grad.dtype == torch.float16 and torch.allclose(s16.grad.float(), ref_in.grad, rtol=1e-3)
    logits = (torch.randn(6, 4, generator=g) * 40).half()
    for fn in (decoupled_kl_loss, decoupled_sigmoid_kl_loss):
        obj, bg = fn(logits, logits.flip(0), torch.tensor([True, False] * 3))
        assert obj.dtype == bg.dtype == torch.float32 and torch.isfinite(obj) and torch.isfinite(bg)


# ======================================================================================
# NECK.FEATURE_NORM "channel": standardize_channels
# ======================================================================================
def test_standardize_channels_matches_reference():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 5, 4, generator=g) * 7.0 + 2.0
    got = standardize_channels(x)
    for n in range(2):
        for c in range(3):
            vals = [float(v) for v in x[n, c].flatten()]
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / len(vals)
            ref = [(v - mean) / math.sqrt(var + 1e-5) for v in vals]
            for a, b in zip(got[n, c].flatten().tolist(), ref):
                assert a == pytest.approx(b, rel=1e-4, abs=1e-5)


def test_standardize_channels_ignores_each_channels_scale_and_offset():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 6, generator=g)
    scale = torch.tensor([0.5, 3.0, 10.0, 100.0]).view(1, 4, 1, 1)
    shift = torch.tensor([-4.0, 0.0, 1.0, 50.0]).view(1, 4, 1, 1)
    assert torch.allclose(standardize_channels(x * scale + shift), standardize_channels(x), atol=1e-4)


def test_feature_loss_of_standardised_maps_is_one_minus_mean_pearson_correlation():
    """With one region covering every cell: sum (s-t)^2 / (2 C HW) = 1 - mean_c rho_c per image
    (eps aside), rho_c the Pearson correlation of channel c's values over the cells."""
    g = torch.Generator().manual_seed(5)
    t = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    s = 0.6 * t + 0.4 * torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    obj, bg = decoupled_feature_loss(
        [standardize_channels(s, eps=0.0)], [standardize_channels(t, eps=0.0)], [torch.ones(1, 8, 8)]
    )
    rhos = []
    for c in range(3):
        a, b = s[0, c].flatten().tolist(), t[0, c].flatten().tolist()
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
        rhos.append(cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)))
    _close(obj, 1.0 - sum(rhos) / 3, rtol=1e-5)
    assert float(bg) == 0.0


def test_standardize_channels_passes_gradients_and_handles_constant_maps():
    x = torch.full((1, 2, 3, 3), 5.0, requires_grad=True)  # zero variance: eps keeps it finite
    y = standardize_channels(x)
    assert torch.equal(y, torch.zeros_like(y))
    z = torch.randn(1, 2, 3, 3, requires_grad=True)
    (standardize_channels(z) * torch.randn(1, 2, 3, 3)).sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
