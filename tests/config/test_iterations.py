"""One rule for a run shortened (or lengthened) on the command line: train_net.py's SOLVER.MAX_ITER,
benchmarks/accuracy.py's --iters (iters_opts) and a LazyConfig's train.max_iter decay the LR at
the same iterations, with the same warm-ups, by Detectron2's own schedulers."""

import logging

import pytest
import torch
from helpers import make_cfg

YAML = "configs/demo/student_slimR18.yaml"  # 500 iterations, steps 375 / 450, warm-up 100
LAZY = "configs/lazy/demo_student_slimR18.py"  # its LazyConfig twin
# Steps floor(375 N / 500), floor(450 N / 500); warm-up ceil(100 N / 500): worked out by hand.
EXPECTED = {2: ([1], 1), 7: ([5, 6], 2), 200: ([150, 180], 40), 333: ([249, 299], 67), 1000: ([750, 900], 200)}


def _yaml_multiplier(cfg):
    """The LR multiplier Detectron2 builds from a YAML config (``build_lr_scheduler``)."""
    from detectron2.solver import build_lr_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return build_lr_scheduler(cfg, optimizer)._multiplier


def _lazy_multiplier(cfg):
    from detectron2.config import instantiate

    return instantiate(cfg.lr_multiplier)


def _curve(multiplier, n):
    """The multiplier at each iteration, as ``LRMultiplier`` evaluates it (``iter / max_iter``)."""
    return [multiplier(i / n) for i in range(n)]


def _expected_curve(n, steps, warmup):
    """Past the warm-up: 1, then 0.1 from the first step, 0.01 from the second (GAMMA 0.1)."""
    return [0.1 ** sum(i >= s for s in steps) for i in range(warmup, n)]


@pytest.mark.parametrize("n", sorted(EXPECTED))
def test_the_three_paths_decay_the_lr_at_the_same_iterations(n):
    from defeat.demo.experiments import iters_opts, load_lazy_config

    steps, warmup = EXPECTED[n]
    yaml_cfg = make_cfg(YAML, "SOLVER.MAX_ITER", n)  # train_net.py ... SOLVER.MAX_ITER n
    bench_cfg = make_cfg(YAML, *iters_opts(n))  # benchmarks/accuracy.py --iters n
    lazy_cfg = make_cfg(LAZY, f"train.max_iter={n}")  # lazy_train_net.py ... train.max_iter=n
    bench_lazy = load_lazy_config(LAZY, iters_opts(n))  # accuracy.py --iters n on a LazyConfig
    assert list(yaml_cfg.SOLVER.STEPS) == list(bench_cfg.SOLVER.STEPS) == steps
    assert yaml_cfg.SOLVER.WARMUP_ITERS == bench_cfg.SOLVER.WARMUP_ITERS == warmup
    assert lazy_cfg.lr_multiplier.scheduler.milestones == bench_lazy.lr_multiplier.scheduler.milestones == steps
    reference = _curve(_yaml_multiplier(yaml_cfg), n)  # Detectron2's own scheduler of the YAML config
    assert reference[warmup:] == pytest.approx(_expected_curve(n, steps, warmup))
    ramp = reference[:warmup]  # the warm-up: rising from 0.001, below the full rate until it ends
    assert ramp[0] == pytest.approx(0.001) and all(a < b < 1 for a, b in zip(ramp, ramp[1:] + [0.999]))
    for cfg in (lazy_cfg, bench_lazy):
        assert _curve(_lazy_multiplier(cfg), n) == pytest.approx(reference, rel=1e-9, abs=1e-12)


def test_without_an_override_the_files_schedule_stands():
    yaml_cfg = make_cfg(YAML)
    assert tuple(yaml_cfg.SOLVER.STEPS) == (375, 450) and yaml_cfg.SOLVER.WARMUP_ITERS == 100
    same = make_cfg(YAML, "SOLVER.MAX_ITER", 500)  # the file's own length: nothing to scale
    assert tuple(same.SOLVER.STEPS) == (375, 450) and same.SOLVER.WARMUP_ITERS == 100
    lazy = make_cfg(LAZY, "train.max_iter=500")
    assert list(lazy.lr_multiplier.scheduler.milestones) == [375, 450] and lazy.lr_multiplier.warmup_length == 0.2


def test_explicit_steps_and_warmups_are_kept_as_given():
    cfg = make_cfg(YAML, "SOLVER.MAX_ITER", 200, "SOLVER.STEPS", "(100,)")
    assert tuple(cfg.SOLVER.STEPS) == (100,) and cfg.SOLVER.WARMUP_ITERS == 40  # only the steps were given
    cfg = make_cfg(YAML, "SOLVER.WARMUP_ITERS", 5, "SOLVER.MAX_ITER", 200)
    assert tuple(cfg.SOLVER.STEPS) == (150, 180) and cfg.SOLVER.WARMUP_ITERS == 5
    lazy = make_cfg(LAZY, "train.max_iter=200", "lr_multiplier.scheduler.milestones=[100,150]")
    assert list(lazy.lr_multiplier.scheduler.milestones) == [100, 150]  # as given: iterations of the run
    assert lazy.lr_multiplier.scheduler.num_updates == 200 and lazy.lr_multiplier.warmup_length == 0.2
    curve = _curve(_lazy_multiplier(lazy), 200)  # decays at 100 and 150 of 200, not at 40 and 60
    assert curve[99] == pytest.approx(1.0) and curve[100] == pytest.approx(0.1) and curve[150] == pytest.approx(0.01)


def test_kd_warmup_scales_with_the_run_unless_given():
    cascade = "configs/demo/defeat_cascade_slimR18_from_R18.yaml"  # KD warm-up 100 of 500
    assert make_cfg(cascade).MODEL.DEFEAT.WARMUP_ITERS == 100
    assert make_cfg(cascade, "SOLVER.MAX_ITER", 250).MODEL.DEFEAT.WARMUP_ITERS == 50
    assert make_cfg(cascade, "SOLVER.MAX_ITER", 3).MODEL.DEFEAT.WARMUP_ITERS == 1  # rounded up: it stays
    assert make_cfg(cascade, "SOLVER.MAX_ITER", 250, "MODEL.DEFEAT.WARMUP_ITERS", 100).MODEL.DEFEAT.WARMUP_ITERS == 100
    fcos = "configs/lazy/demo_defeat_fcos_slimR18_from_R18.py"  # model.defeat.warmup_iters 100 of 500
    assert make_cfg(fcos, "train.max_iter=250").model.defeat.warmup_iters == 50
    assert make_cfg(fcos, "train.max_iter=250", "model.defeat.warmup_iters=100").model.defeat.warmup_iters == 100


def test_a_longer_run_stretches_the_schedule():
    cfg = make_cfg(YAML, "SOLVER.MAX_ITER", 1500)
    assert tuple(cfg.SOLVER.STEPS) == (1125, 1350) and cfg.SOLVER.WARMUP_ITERS == 300


def test_model_zoo_schedule_whose_last_milestone_is_the_end():
    """Detectron2's common/coco_schedule.py (milestones end with the run's length, warm-up 1000
    as a fraction) is rescaled the same way: steps 210k / 250k of 270k at 27k iterations."""
    cfg = make_cfg("configs/lazy/fcos_R_101_FPN_3x.py", "train.max_iter=27000")
    sched = cfg.lr_multiplier.scheduler
    assert list(sched.milestones) == [21000, 25000] and sched.num_updates == 27000
    assert cfg.lr_multiplier.warmup_length == pytest.approx(100 / 27000)
    curve = _lazy_multiplier(cfg)
    assert curve(20999 / 27000) == pytest.approx(1.0) and curve(21000 / 27000) == pytest.approx(0.1)
    assert curve(25000 / 27000) == pytest.approx(0.01)


def test_steps_that_collapse_are_merged_as_for_yaml():
    """At 2 iterations both steps land on 1: one decay, in both kinds of config (after a warm-up
    of one iteration, 100 / 500 of 2 rounded up)."""
    lazy = make_cfg(LAZY, "train.max_iter=2")
    assert list(lazy.lr_multiplier.scheduler["values"]) == [1.0, 0.1]
    yaml_curve = _curve(_yaml_multiplier(make_cfg(YAML, "SOLVER.MAX_ITER", 2)), 2)
    assert _curve(_lazy_multiplier(lazy), 2) == pytest.approx(yaml_curve) == [0.001, 0.1]


def test_one_info_line_names_the_old_and_new_schedule(caplog):
    with caplog.at_level(logging.INFO, logger="defeat"):
        make_cfg(YAML, "SOLVER.MAX_ITER", 200)
        make_cfg(LAZY, "train.max_iter=200")
        make_cfg(YAML)  # no override: no line
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("defeat.config")]
    assert len(lines) == 2, lines
    assert "SOLVER.MAX_ITER 500 -> 200" in lines[0] and "SOLVER.STEPS (375, 450) -> (150, 180)" in lines[0]
    assert "SOLVER.WARMUP_ITERS 100 -> 40" in lines[0]
    assert "train.max_iter 500 -> 200" in lines[1] and "LR steps [375, 450] -> [150, 180]" in lines[1]


def test_a_rescaled_lazy_config_saved_by_a_run_loads_with_the_same_schedule(tmp_path):
    """lazy_train_net.py saves the rescaled config as config.yaml; loaded again (resume, reuse by
    the benchmarks) it has the same steps and is not rescaled twice."""
    from detectron2.config import LazyConfig

    from defeat.config.files import load_config
    from defeat.demo.experiments import config_digest, iters_opts

    cfg = make_cfg(LAZY, "train.max_iter=200")
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    again = load_config(str(tmp_path / "config.yaml"), lazy=True)
    assert list(again.lr_multiplier.scheduler.milestones) == [150, 180] and again.train.max_iter == 200
    assert config_digest(str(tmp_path / "config.yaml"), [], lazy=True) == config_digest(LAZY, iters_opts(200))


def test_the_line_reaches_the_runs_log_set_up_after_loading(monkeypatch):
    """train_net.py loads the config before its log exists (setup_logger needs OUTPUT_DIR): the
    line is held and logged once the run's handlers are there, exactly once."""
    from defeat.engine.script import hold_log_records

    logger = logging.getLogger("defeat")
    monkeypatch.setattr(logger, "handlers", [])  # as in a fresh process
    level = logger.level
    logger.setLevel(logging.NOTSET)
    seen = []

    class Run(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    try:
        with hold_log_records() as held:
            make_cfg(YAML, "SOLVER.MAX_ITER", 200)
        assert logger.handlers == [] and logger.level == logging.NOTSET and not seen
        logger.addHandler(Run())  # what setup_logger(OUTPUT_DIR, name="defeat") does
        logger.setLevel(logging.DEBUG)
        held.replay()
        held.replay()
        assert len(seen) == 1 and "SOLVER.STEPS (375, 450) -> (150, 180)" in seen[0]
        with hold_log_records() as again:  # a logger set up already: shown at once, nothing held
            make_cfg(YAML, "SOLVER.MAX_ITER", 100)
        assert len(seen) == 2 and not again.records
    finally:
        logger.setLevel(level)
