"""One schedule: every iteration count of a run (LR steps and warm-up, KD warm-up, the KD
schedule's length, a LazyConfig's milestones and ``num_updates``) follows the run's one length,
and each contradiction is refused by the loader in one line naming the key and the fix, for YAML
and LazyConfig alike."""

import math
from fractions import Fraction

import pytest
from detectron2.config import LazyConfig, instantiate
from helpers import CONFIGS, make_cfg

from defeat.config.files import load_config
from defeat.config.settings import resolve_settings, settings_from_cfg
from defeat.errors import ConfigFileError, DeFeatConfigError

YAML = "configs/demo/defeat_cascade_slimR18_from_R18.yaml"  # 500 iterations, steps 375/450, LR and KD warm-up 100
LAZY = "configs/lazy/demo_defeat_fcos_slimR18_from_R18.py"  # its schedule in a LazyConfig, KD warm-up 100
STUDENT = "configs/lazy/demo_student_slimR18.py"  # milestones [375, 450] of num_updates 500, warm-up 0.2


def _refused(error, match, path, *opts):
    with pytest.raises(error, match=match) as info:
        make_cfg(path, *opts)
    assert "\n" not in str(info.value)  # one line
    return str(info.value)


# ---- contradictions, each refused ----


@pytest.mark.parametrize(
    "path, opts",
    [
        (YAML, ("SOLVER.MAX_ITER", 2, "MODEL.DEFEAT.WARMUP_ITERS", 100)),
        (LAZY, ("train.max_iter=2", "model.defeat.warmup_iters=100")),
    ],
    ids=["yaml", "lazy"],
)
def test_a_kd_warmup_longer_than_the_run_is_refused(path, opts):
    message = _refused(DeFeatConfigError, r"WARMUP_ITERS = 100 is longer than the run's 2 iterations", path, *opts)
    assert "MODEL.DEFEAT.WARMUP_ITERS" in message and "model.defeat.warmup_iters" in message
    assert "give at most 2" in message


def test_a_kd_warmup_longer_than_the_run_in_the_file_itself_is_refused(tmp_path):
    f = tmp_path / "long_warmup.yaml"
    f.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nMODEL:\n  DEFEAT:\n    WARMUP_ITERS: 5\n')  # 4 iterations
    with pytest.raises(DeFeatConfigError, match="WARMUP_ITERS = 5 is longer than the run's 4 iterations"):
        load_config(str(f))
    whole_run = load_config(str(f), ["SOLVER.MAX_ITER", "5", "MODEL.DEFEAT.WARMUP_ITERS", "5"])
    assert whole_run.MODEL.DEFEAT.WARMUP_ITERS == 5  # 5 of 5: the warm-up fills the run, allowed
    # A teacher's config is only built: its schedule is not run, so it is not checked.
    assert load_config(str(f), check_settings=False).MODEL.DEFEAT.WARMUP_ITERS == 5


@pytest.mark.parametrize(
    "steps, problem",
    [
        ("(150, 300)", r"\[300\] lie outside the run's 200 iterations"),
        ("(150, 200)", r"\[200\] lie outside the run's 200 iterations"),  # at the end: never decays
        ("(0, 150)", r"\[0\] lie outside"),
        ("(150, 100)", "must be strictly increasing"),
        ("(150, 150)", "must be strictly increasing"),
    ],
)
def test_yaml_steps_outside_the_run_or_not_increasing_are_refused(steps, problem):
    message = _refused(ConfigFileError, problem, YAML, "SOLVER.MAX_ITER", 200, "SOLVER.STEPS", steps)
    assert message.startswith("SOLVER.STEPS = ") and "lr_multiplier.scheduler.milestones" in message


def test_steps_beyond_the_end_in_the_file_itself_are_refused(tmp_path):
    f = tmp_path / "short.yaml"
    f.write_text(f'_BASE_: "{CONFIGS}/tiny_base.yaml"\nSOLVER:\n  MAX_ITER: 300\n  STEPS: (220, 400)\n')
    with pytest.raises(ConfigFileError, match=r"SOLVER.STEPS = \[220, 400\]: \[400\] lie outside the run's 300"):
        load_config(str(f))


def test_steps_are_not_checked_for_a_scheduler_that_ignores_them():
    cfg = make_cfg(YAML, "SOLVER.LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.STEPS", "(900,)")
    assert tuple(cfg.SOLVER.STEPS) == (900,)  # unused by the cosine LR: no contradiction


def test_a_yaml_lr_warmup_longer_than_the_run_is_refused():
    message = _refused(
        ConfigFileError, "SOLVER.WARMUP_ITERS = 300 is longer than the run's 200", YAML,
        "SOLVER.MAX_ITER", 200, "SOLVER.WARMUP_ITERS", 300,
    )  # fmt: skip
    assert "lr_multiplier.warmup_length" in message and "give at most 200" in message
    assert make_cfg(YAML, "SOLVER.MAX_ITER", 200, "SOLVER.WARMUP_ITERS", 200).SOLVER.WARMUP_ITERS == 200


@pytest.mark.parametrize("value", ["100.0", "-0.1"])
def test_a_lazy_lr_warmup_that_is_not_a_fraction_is_refused(value):
    message = _refused(ConfigFileError, rf"lr_multiplier.warmup_length = {value} is not a fraction", STUDENT,
                       f"lr_multiplier.warmup_length={value}")  # fmt: skip
    assert "SOLVER.WARMUP_ITERS" in message


def test_lazy_milestones_given_on_the_command_line_count_the_runs_iterations():
    """The issue's case: milestones [2, 5] in a 10-iteration run decayed at 2/500 and 5/500 of the
    run because num_updates stayed 500. Now num_updates follows train.max_iter."""
    cfg = make_cfg(STUDENT, "train.max_iter=10", "lr_multiplier.scheduler.milestones=[2,5]")
    sched = cfg.lr_multiplier.scheduler
    assert list(sched.milestones) == [2, 5] and sched.num_updates == 10
    multiplier = instantiate(cfg.lr_multiplier)
    post_warmup = [multiplier(i / 10) for i in range(2, 10)]  # warm-up 0.2 of 10: iterations 0-1
    assert post_warmup == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.01])
    same_length = make_cfg(STUDENT, "lr_multiplier.scheduler.milestones=[100,200]")
    assert same_length.lr_multiplier.scheduler.num_updates == 500


def test_a_num_updates_override_other_than_the_runs_length_is_refused():
    message = _refused(
        ConfigFileError, r"lr_multiplier.scheduler.num_updates = 500 differs from train.max_iter = 10", STUDENT,
        "train.max_iter=10", "lr_multiplier.scheduler.milestones=[2,5]", "lr_multiplier.scheduler.num_updates=500",
    )  # fmt: skip
    assert "SOLVER.STEPS" in message
    ok = make_cfg(STUDENT, "lr_multiplier.scheduler.num_updates=500")  # the run's length: allowed
    assert ok.lr_multiplier.scheduler.num_updates == 500


@pytest.mark.parametrize("milestones, count", [("[100,200,300]", 4), ("[100]", 2)])
def test_milestones_without_their_values_are_refused_at_load_time(milestones, count):
    """fvcore raised this after the model was built, as a traceback; now one line at load time."""
    message = _refused(
        ConfigFileError, rf"need {count} LR factors in lr_multiplier.scheduler.values", STUDENT,
        f"lr_multiplier.scheduler.milestones={milestones}",
    )  # fmt: skip
    assert "got [1.0, 0.1, 0.01]" in message and "lr_multiplier.scheduler.values=[" in message
    values = ",".join(str(0.1**i) for i in range(count))
    cfg = make_cfg(
        STUDENT, f"lr_multiplier.scheduler.milestones={milestones}", f"lr_multiplier.scheduler.values=[{values}]"
    )
    assert len(cfg.lr_multiplier.scheduler["values"]) == count


@pytest.mark.parametrize(
    "milestones, problem",
    [("[100,600]", r"\[600\] lie outside the run's 500 iterations"), ("[300,100]", "strictly increasing")],
)
def test_lazy_milestones_outside_the_run_or_not_increasing_are_refused(milestones, problem):
    message = _refused(ConfigFileError, problem, STUDENT, f"lr_multiplier.scheduler.milestones={milestones}")
    assert message.startswith("lr_multiplier.scheduler.milestones = ") and "SOLVER.STEPS" in message


def test_any_other_scheduler_fault_is_one_line_at_load_time():
    _refused(ConfigFileError, r"lr_multiplier cannot be built \(.*warmup", STUDENT, "lr_multiplier.warmup_method=cubic")


def test_a_kd_schedule_length_other_than_the_runs_is_refused(tmp_path):
    message = _refused(
        DeFeatConfigError, r"model.defeat.max_iter = 300 differs from train.max_iter = 500", LAZY,
        "model.defeat.max_iter=300",
    )  # fmt: skip
    assert 'model.defeat.max_iter = "${train.max_iter}"' in message and "SOLVER.MAX_ITER" in message
    # A LazyConfig whose model.defeat came from default_settings() without the interpolation:
    # its KD schedule would end at the YAML default 40000.
    cfg = LazyConfig.load(LAZY)
    cfg.model.defeat.max_iter = 40000
    LazyConfig.save(cfg, str(tmp_path / "config.yaml"))
    with pytest.raises(DeFeatConfigError, match="model.defeat.max_iter = 40000 differs from train.max_iter = 500"):
        load_config(str(tmp_path / "config.yaml"), lazy=True)


# ---- the good paths: one length, every count derived ----


def _steps(steps, old, new):
    """Independent of the code: floor(s * new / old) with fractions, inside the run, distinct."""
    out = []
    for s in steps:
        v = math.floor(Fraction(s * new, old))
        if 0 < v < new and v not in out:
            out.append(v)
    return out


def _warmup(w, old, new):
    return math.ceil(Fraction(w * new, old))


@pytest.mark.parametrize("n", [3, 7, 250, 1234])
def test_a_changed_length_rescales_every_derived_count(n):
    yaml = make_cfg(YAML, "SOLVER.MAX_ITER", n)
    assert list(yaml.SOLVER.STEPS) == _steps([375, 450], 500, n)
    assert yaml.SOLVER.WARMUP_ITERS == _warmup(100, 500, n)
    settings = settings_from_cfg(yaml)
    assert settings["warmup_iters"] == _warmup(100, 500, n) and settings["max_iter"] == n

    lazy = make_cfg(LAZY, f"train.max_iter={n}")
    sched = lazy.lr_multiplier.scheduler
    assert list(sched.milestones) == _steps([375, 450], 500, n) and sched.num_updates == n
    assert len(sched["values"]) == len(sched.milestones) + 1
    assert lazy.lr_multiplier.warmup_length * n == pytest.approx(_warmup(100, 500, n))
    settings = resolve_settings(lazy.model.defeat)
    assert settings["warmup_iters"] == _warmup(100, 500, n) and settings["max_iter"] == n


def test_a_files_milestones_of_another_length_are_restated_in_the_runs_iterations(tmp_path):
    """Detectron2's coco_schedule (milestones 210k/250k, the last 270k the end) in a 1000-iteration
    run decays where Detectron2 would (fractions of the run); the loader writes those iterations
    down, with num_updates the run's length, and the LR curve is unchanged."""
    original = LazyConfig.load("configs/lazy/fcos_R_101_FPN_3x.py")
    original.train.max_iter = 1000
    LazyConfig.save(original, str(tmp_path / "config.yaml"))
    cfg = load_config(str(tmp_path / "config.yaml"), lazy=True)
    sched = cfg.lr_multiplier.scheduler
    expected = [math.ceil(Fraction(210000 * 1000, 270000)), math.ceil(Fraction(250000 * 1000, 270000))]
    assert list(sched.milestones) == expected == [778, 926] and sched.num_updates == 1000
    before, after = instantiate(original.lr_multiplier), instantiate(cfg.lr_multiplier)
    assert [after(i / 1000) for i in range(1000)] == pytest.approx([before(i / 1000) for i in range(1000)])
