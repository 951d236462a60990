"""The opt-in KD balance (``MODEL.DEFEAT.BALANCE``): the factor is TARGET_RATIO over the
KD/detection ratio measured (schedule taken out) over ITERS iterations, set once, applied to every
``loss_defeat_*`` term of the three families after the measurement and not before; it survives a
checkpoint round trip and a resume (not measured again), a fresh start resets it, and under DDP
every process takes the main process's sums."""

import logging
from types import SimpleNamespace

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, defeat_cfg, lazy_cfg, retina_cfg, save_random_weights, synthetic_batch

from defeat import DeFeatDistiller
from defeat.checkpoint import AtomicDetectionCheckpointer, load_weights_strictly
from defeat.config.files import load_config
from defeat.config.validation import DeFeatConfigError
from defeat.engine import kd_balance
from defeat.engine.kd_balance import KDBalanceHook, KDTargetRatioHook, balance_factor
from defeat.engine.start import load_or_resume
from defeat.modeling.meta_arch.common import build_eval_model

S = {"p2": ShapeSpec(channels=8, stride=4), "p3": ShapeSpec(channels=8, stride=8)}
T = {"p2": ShapeSpec(channels=16, stride=4), "p3": ShapeSpec(channels=16, stride=8)}
DET = {"loss_cls": 0.75, "loss_box_reg": 0.25}  # detection terms, sum 1


def _distiller(**kw):
    args = dict(in_features=["p2", "p3"], scale_base=8.0, balance_target_ratio=2.0, balance_iters=4, max_iter=100)
    args.update(kw)
    return DeFeatDistiller(student_shapes=S, teacher_shapes=T, **args)


def _run(hook, model, steps, start=0):
    """``hook`` through ``steps`` (the losses a trainer logs at each iteration) as the trainer runs
    it; returns the distiller's balance after each step."""
    storage = EventStorage(start)
    hook.trainer = SimpleNamespace(storage=storage, model=model, iter=start)
    after = []
    with storage:
        hook.before_train()
        for i, losses in enumerate(steps, start):
            storage.iter = hook.trainer.iter = i
            if losses:
                storage.put_scalars(**losses)
            hook.after_step()
            after.append(model.distiller.kd_balance())
        hook.after_train()
    return after


def test_the_factor_is_target_over_the_ratio_at_full_kd_weight_set_after_iters(caplog):
    """Warm-up over 10 iterations: the logged KD terms are the raw ones times (i + 1) / 10; the
    ratio is of the raw terms. The factor is set after the 4th iteration, not before."""
    d = _distiller(warmup_iters=10)
    raw = [(3.0, 1.0), (5.0, 2.0), (4.0, 0.5), (6.0, 1.5), (99.0, 99.0)]  # (neck_bg, neck_obj) per iteration
    steps = [
        {**DET, "loss_defeat_neck_bg": bg * (i + 1) / 10, "loss_defeat_neck_obj": obj * (i + 1) / 10}
        for i, (bg, obj) in enumerate(raw)
    ]
    hook = KDTargetRatioHook()
    with caplog.at_level(logging.INFO, logger="defeat.engine.kd_balance"):
        after = _run(hook, SimpleNamespace(distiller=d), steps)
    ratio = sum(bg + obj for bg, obj in raw[:4]) / (4 * sum(DET.values()))  # 22.5 / 4
    assert after[:3] == [None, None, None]  # factor 1 while measuring
    factor, at = after[3]
    assert at == 3 and factor == pytest.approx(2.0 / ratio, rel=1e-6) and after[4] == after[3]
    assert hook.result == pytest.approx({"ratio": ratio, "factor": 2.0 / ratio, "iteration": 3})
    lines = [r.getMessage() for r in caplog.records if r.name == "defeat.engine.kd_balance"]
    assert len(lines) == 1
    assert f"measured at {ratio:.4g} over iterations 0-3" in lines[0] and "target 2" in lines[0]
    assert f"scaled by {2.0 / ratio:.4g} from iteration 4 on" in lines[0]


def test_balance_factor_and_what_cannot_be_measured(caplog):
    assert balance_factor(3.0, kd=12.0, det=2.0) == pytest.approx(0.5)  # ratio 6 -> 3
    for kd, det in ((0.0, 1.0), (1.0, 0.0), (float("nan"), 1.0), (1.0, float("inf"))):
        assert balance_factor(2.0, kd, det) is None
    d = _distiller(balance_iters=2)
    with caplog.at_level(logging.WARNING, logger="defeat.engine.kd_balance"):
        after = _run(KDTargetRatioHook(), SimpleNamespace(distiller=d), [{**DET, "loss_defeat_neck_bg": 0.0}] * 2)
    assert after[-1] == (1.0, 1) and "could not be measured" in caplog.text and "factor 1" in caplog.text


def test_a_run_shorter_than_the_measurement_sets_nothing_and_says_so(caplog):
    d = _distiller(balance_iters=5)
    with caplog.at_level(logging.WARNING, logger="defeat.engine.kd_balance"):
        after = _run(KDTargetRatioHook(), SimpleNamespace(distiller=d), [{**DET, "loss_defeat_neck_bg": 1.0}] * 3)
    assert after == [None] * 3 and "ended after 3 of the 5 measured iterations" in caplog.text


def test_ddp_every_process_takes_the_main_process_sums(monkeypatch, caplog):
    """A worker's storage holds no losses (Detectron2 logs them, averaged over the processes, on the
    main one); it counts the same iterations and takes the main process's sums from all_gather."""
    import detectron2.utils.comm as comm

    sent = []
    main = (12.0, 4.0, 4)  # the main process's KD sum (full weight), detection sum, iterations logged
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    monkeypatch.setattr(comm, "all_gather", lambda obj: sent.append(obj) or [main, obj])
    d = _distiller()
    with caplog.at_level(logging.INFO, logger="defeat.engine.kd_balance"):
        after = _run(KDTargetRatioHook(), SimpleNamespace(distiller=d), [{}] * 4)
    assert sent == [(0.0, 0.0, 0)]  # once, at the last measured iteration
    assert after[-1] == (pytest.approx(2.0 / 3.0), 3)
    assert not [r for r in caplog.records if r.name == "defeat.engine.kd_balance"]  # the main process logs


def test_the_balance_scales_every_kd_term_of_the_loss_dict_and_only_them(teacher_weights):
    """A DeFeatRCNN (every KD term on) with the balance: the same losses as without it until the
    factor is set, then each loss_defeat_* term times the factor, the detection terms unchanged."""
    on = ["MODEL.DEFEAT.HEAD.ENABLED", True, "MODEL.DEFEAT.BOX.ENABLED", True, "MODEL.DEFEAT.CROSS_HEAD.ENABLED", True]
    on += ["SOLVER.MAX_ITER", 100]  # longer than the measurement
    batch = synthetic_batch(boxes_per_image=(4, 2))
    plain = _losses(_model(defeat_cfg(teacher_weights, *on)), batch)
    model = _model(defeat_cfg(teacher_weights, *on, "MODEL.DEFEAT.BALANCE.TARGET_RATIO", 2.0))
    before = _losses(model, batch)
    assert before == plain and len([k for k in plain if k.startswith("loss_defeat_")]) == 7
    model.distiller.set_kd_balance(0.3, 19)
    _check_scaled(_losses(model, batch), plain, 0.3)


def _model(cfg):
    torch.manual_seed(0)
    return build_model(cfg).train()


def _losses(model, batch, iteration=30):
    torch.manual_seed(1)
    with EventStorage(iteration):
        return {k: float(v.detach()) for k, v in model(batch).items()}


def _check_scaled(got, plain, factor):
    assert set(got) == set(plain)
    for k, v in plain.items():
        expected = v * factor if k.startswith("loss_defeat_") else v
        assert got[k] == pytest.approx(expected, rel=1e-5), k


@pytest.fixture(scope="module")
def retina_weights(tmp_path_factory):
    return save_random_weights(f"{CONFIGS}/tiny_retinanet_teacher.yaml", tmp_path_factory.mktemp("rt"))


@pytest.fixture(scope="module")
def fcos_weights(tmp_path_factory):
    return save_random_weights(f"{CONFIGS}/tiny_fcos_teacher.py", tmp_path_factory.mktemp("ft"))


def test_the_dense_families_share_it(retina_weights, fcos_weights):
    from detectron2.config import instantiate

    batch = synthetic_batch(boxes_per_image=(4, 2))
    for build in (
        lambda *o: _model(retina_cfg(retina_weights, "SOLVER.MAX_ITER", 100, *o)),
        lambda *o: _fcos(instantiate, fcos_weights, *o),
    ):
        plain = _losses(build(), batch)  # each from a fresh model: a dense detector's loss normaliser moves
        assert _losses(build("MODEL.DEFEAT.BALANCE.TARGET_RATIO", 2.0), batch) == plain
        assert any(k.startswith("loss_defeat_") for k in plain)
        model = build("MODEL.DEFEAT.BALANCE.TARGET_RATIO", 2.0)
        model.distiller.set_kd_balance(4.0, 7)
        _check_scaled(_losses(model, batch), plain, 4.0)


def _fcos(instantiate, weights, *yaml_opts):
    extra = [f"model.defeat.balance.target_ratio={yaml_opts[1]}"] if yaml_opts else []
    cfg = lazy_cfg(
        f"{CONFIGS}/tiny_fcos_defeat.py",
        f"model.teacher.weights={weights}",
        f"model.teacher.config_file={CONFIGS}/tiny_fcos_teacher.py",
        "train.max_iter=100",
        *extra,
    )
    torch.manual_seed(0)
    return instantiate(cfg.model).train()


def test_the_factor_survives_a_checkpoint_and_a_resume_but_not_a_fresh_start(teacher_weights, tmp_path, caplog):
    opts = ["MODEL.DEFEAT.BALANCE.TARGET_RATIO", 2.0, "MODEL.DEFEAT.BALANCE.ITERS", 3]
    model = _model(defeat_cfg(teacher_weights, *opts))
    model.distiller.set_kd_balance(0.125, 2)
    AtomicDetectionCheckpointer(model, str(tmp_path)).save("model_0000002")
    ckpt = str(tmp_path / "model_0000002.pth")
    # DetectionCheckpointer round trip into a new model of the same config
    loaded = _model(defeat_cfg(teacher_weights, *opts))
    assert loaded.distiller.kd_balance() is None
    DetectionCheckpointer(loaded).load(ckpt)
    assert loaded.distiller.kd_balance() == (0.125, 2)
    # --resume: kept, and the hook neither measures again nor changes it
    resumed = _model(defeat_cfg(teacher_weights, *opts))
    assert load_or_resume(AtomicDetectionCheckpointer(resumed, str(tmp_path)), "", resume=True)
    with caplog.at_level(logging.INFO, logger="defeat.engine.kd_balance"):
        after = _run(KDTargetRatioHook(), resumed, [{**DET, "loss_defeat_neck_bg": 5.0}] * 4, start=3)
    assert after == [(0.125, 2)] * 4
    assert "factor 0.125 (measured up to iteration 2) restored from the checkpoint; not measured again" in caplog.text
    # a fresh run starting from that checkpoint (MODEL.WEIGHTS) measures its own
    fresh = _model(defeat_cfg(teacher_weights, *opts))
    assert not load_or_resume(AtomicDetectionCheckpointer(fresh, str(tmp_path / "new")), ckpt, resume=False)
    assert fresh.distiller.kd_balance() is None and float(fresh.distiller.balance_factor) == 1.0
    # the plain student evaluates the checkpoint: the balance buffers are DeFeat's own, left out
    student = build_eval_model(load_config(f"{CONFIGS}/tiny_defeat.yaml", [str(o) for o in opts]))
    load_weights_strictly(student, ckpt)
    assert not any(k.startswith("distiller.") for k in student.state_dict())


def test_the_balance_is_off_by_default_and_its_setter_refuses_bad_calls(teacher_weights):
    model = _model(defeat_cfg(teacher_weights))
    assert not any("balance" in k for k in model.state_dict()) and model.distiller.kd_balance() is None
    with pytest.raises(ValueError, match="TARGET_RATIO is 0"):
        model.distiller.set_kd_balance(2.0, 3)
    d = _distiller()
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="positive and finite"):
            d.set_kd_balance(bad, 3)


def test_the_existing_balance_line_notes_the_balance_instead_of_warning(caplog):
    d = _distiller(balance_iters=20)
    steps = [{**DET, "loss_defeat_neck_bg": 50.0}] * 20  # 50x: above the dominance threshold
    hook = KDBalanceHook()
    storage = EventStorage(0)
    hook.trainer = SimpleNamespace(storage=storage, model=SimpleNamespace(distiller=d))
    with storage, caplog.at_level(logging.INFO, logger="defeat.engine.kd_balance"):
        for i, losses in enumerate(steps):
            storage.iter = i
            storage.put_scalars(**losses)
            hook.after_step()
    assert hook.reported[0] == logging.INFO
    assert "MODEL.DEFEAT.BALANCE scales the KD terms to 2x after its 20 measured iterations" in hook.reported[1]


@pytest.mark.parametrize(
    "opts, message",
    [
        (["MODEL.DEFEAT.BALANCE.TARGET_RATIO", 2.0, "MODEL.DEFEAT.BALANCE.ITERS", 4], "ITERS = 4 is not shorter"),
        (["MODEL.DEFEAT.BALANCE.TARGET_RATIO", 2.0], "ITERS = 20 is not shorter than the run's 4"),
    ],
)
def test_a_measurement_that_does_not_end_inside_the_run_is_refused(opts, message, teacher_weights):
    """tiny_defeat: 4 iterations (YAML and LazyConfig)."""
    with pytest.raises(DeFeatConfigError, match=message):
        defeat_cfg(teacher_weights, *opts)
    overrides = [f"model.defeat.{k[len('MODEL.DEFEAT.') :].lower()}={v}" for k, v in zip(opts[0::2], opts[1::2])]
    with pytest.raises(DeFeatConfigError, match=message):
        lazy_cfg(f"{CONFIGS}/tiny_defeat.py", f"model.teacher.weights={teacher_weights}", *overrides)
    shorter = defeat_cfg(teacher_weights, *opts, "MODEL.DEFEAT.BALANCE.ITERS", 3)  # 3 of 4: fine
    assert shorter.MODEL.DEFEAT.BALANCE.ITERS == 3


def test_the_hook_reads_the_module_of_a_ddp_model():
    d = _distiller()
    assert kd_balance.balanced_distiller(SimpleNamespace(module=SimpleNamespace(distiller=d))) is d
    assert kd_balance.balanced_distiller(SimpleNamespace(distiller=_distiller(balance_target_ratio=0.0))) is None
    assert kd_balance.balanced_distiller(SimpleNamespace()) is None
