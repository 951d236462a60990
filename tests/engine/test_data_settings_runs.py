"""The settings that read the data, through ``train_net.py`` and ``lazy_train_net.py``: a run with
``NECK.SCALE_BASE: auto`` logs and saves the number (its ``config.yaml`` loads with it; a resume
reads it from there, not from the data), and the KD balance logs its factor and is in the
checkpoint of the iteration that sets it; a resume restores it without measuring again."""

import math
import os
import re

import pytest
import torch
import yaml
from detectron2.data import DatasetCatalog
from helpers import CONFIGS, TINY, data_opts, train_args

from defeat.config.files import defeat_settings, load_config
from defeat.data import box_levels
from defeat.data.box_levels import choose_scale_base

BALANCE = re.compile(
    r"KD balance: loss_defeat_\* / detection losses measured at ([0-9.e+-]+) over iterations 0-1 .*target 2 "
    r"\(MODEL.DEFEAT.BALANCE.TARGET_RATIO\): every KD term scaled by ([0-9.e+-]+) from iteration 2 on"
)


def _expected(config, *opts):
    return choose_scale_base(load_config(config, list(opts)), {TINY[0]: DatasetCatalog.get(TINY[0])}).value


def _checkpoint(out, name):
    return torch.load(os.path.join(out, name), map_location="cpu", weights_only=False)["model"]


def _check_run(out, expected_base, saved_base):
    log = open(os.path.join(out, "log.txt")).read()
    assert f"MODEL.DEFEAT.NECK.SCALE_BASE auto -> {expected_base:g}: " in log
    assert saved_base == expected_base and isinstance(saved_base, float)
    ratio, factor = (float(x) for x in BALANCE.search(log).groups())
    assert factor == pytest.approx(2.0 / ratio, rel=2e-3)
    first, second = _checkpoint(out, "model_0000000.pth"), _checkpoint(out, "model_0000001.pth")
    assert int(first["distiller.balance_set_at"]) == -1 and float(first["distiller.balance_factor"]) == 1.0
    assert int(second["distiller.balance_set_at"]) == 1  # the checkpoint of the iteration that set it
    assert float(second["distiller.balance_factor"]) == pytest.approx(factor, rel=2e-3)
    return factor


@pytest.mark.heavy(seconds=90)
def test_train_net_saves_auto_as_a_number_and_the_balance_in_its_checkpoints(
    teacher_weights, tiny_dataset, tmp_path, monkeypatch
):
    import train_net

    out = str(tmp_path / "run")
    opts = [
        *data_opts(out),
        "DATASETS.TEST",
        "()",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        "SOLVER.CHECKPOINT_PERIOD",
        1,
        "MODEL.DEFEAT.NECK.SCALE_BASE",
        "auto",
        "MODEL.DEFEAT.BALANCE.TARGET_RATIO",
        2.0,
        "MODEL.DEFEAT.BALANCE.ITERS",
        2,
    ]
    expected = _expected(f"{CONFIGS}/tiny_defeat.yaml", *[str(o) for o in opts])
    train_net.main(train_args(f"{CONFIGS}/tiny_defeat.yaml", *opts, "SOLVER.MAX_ITER", 3))
    saved = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    factor = _check_run(out, expected, saved["MODEL"]["DEFEAT"]["NECK"]["SCALE_BASE"])
    # the saved config is what evaluation and the tools load: the number, not "auto"
    assert defeat_settings(load_config(os.path.join(out, "config.yaml")))["neck"]["scale_base"] == expected

    # A resume with the same command line: the number from config.yaml, the factor from the checkpoint.
    monkeypatch.setattr(box_levels, "choose_scale_base", lambda *a: pytest.fail("the data was read again"))
    train_net.main(train_args(f"{CONFIGS}/tiny_defeat.yaml", *opts, "SOLVER.MAX_ITER", 4, resume=True))
    log = open(os.path.join(out, "log.txt")).read()
    assert f"MODEL.DEFEAT.NECK.SCALE_BASE auto -> {expected:g}: the value the run's first start computed" in log
    assert re.search(
        r"KD balance: factor ([0-9.e+-]+) \(measured up to iteration 1\) restored from the checkpoint", log
    )
    assert len(BALANCE.findall(log)) == 1  # measured once
    final = _checkpoint(out, "model_final.pth")
    assert int(final["distiller.balance_set_at"]) == 1
    assert float(final["distiller.balance_factor"]) == pytest.approx(factor, rel=2e-3)
    assert yaml.safe_load(open(os.path.join(out, "config.yaml")))["MODEL"]["DEFEAT"]["NECK"]["SCALE_BASE"] == expected


@pytest.mark.heavy(seconds=90)
def test_lazy_train_net_saves_auto_as_a_number_and_the_balance_in_its_checkpoints(
    teacher_weights, tiny_dataset, tmp_path, monkeypatch
):
    from detectron2.engine import default_argument_parser

    import lazy_train_net

    out = str(tmp_path / "lazy")
    overrides = [
        f"model.teacher.weights={teacher_weights}",
        f"train.output_dir={out}",
        f"dataloader.train.dataset.names={TINY[0]}",
        f"dataloader.test.dataset.names={TINY[1]}",
        "train.max_iter=3",
        "train.checkpointer.period=1",
        "model.defeat.neck.scale_base=auto",
        "model.defeat.balance.target_ratio=2.0",
        "model.defeat.balance.iters=2",
    ]
    expected = _expected(f"{CONFIGS}/tiny_defeat.py", *overrides)
    assert expected == _expected(f"{CONFIGS}/tiny_defeat.yaml")  # the YAML twin's number
    lazy_train_net.main(
        default_argument_parser().parse_args(["--config-file", f"{CONFIGS}/tiny_defeat.py", *overrides])
    )
    cfg = load_config(os.path.join(out, "config.yaml"), lazy=True)  # as the tools load it
    _check_run(out, expected, cfg.model.defeat.neck.scale_base)
    assert defeat_settings(cfg)["neck"]["scale_base"] == expected and not math.isnan(expected)
    monkeypatch.setattr(box_levels, "choose_scale_base", lambda *a: pytest.fail("the data was read again"))
    longer = [o for o in overrides if not o.startswith("train.max_iter=")] + ["train.max_iter=4"]
    lazy_train_net.main(
        default_argument_parser().parse_args(["--config-file", f"{CONFIGS}/tiny_defeat.py", "--resume", *longer])
    )
    log = open(os.path.join(out, "log.txt")).read()
    assert f"SCALE_BASE auto -> {expected:g}: the value the run's first start computed, read from" in log
    assert "restored from the checkpoint; not measured again" in log and len(BALANCE.findall(log)) == 1


@pytest.mark.heavy(seconds=60)
def test_two_processes_take_the_same_scale_base_and_balance_factor(teacher_weights, tmp_path):
    """--num-gpus 2 on the CPU (gloo): the main process computes SCALE_BASE (the worker takes it),
    both count the same measured iterations and end with the same balance factor."""
    from launch_harness import cpu_env, finish, rank_weights, start

    out = tmp_path / "run"
    env = cpu_env(DEFEAT_DEMO_ROOT=tmp_path / "data", DEFEAT_DEMO_NUM_TRAIN=4, DEFEAT_DEMO_NUM_VAL=2)
    argv = ["--num-gpus", "2", "--dist-url", "auto", "--config-file", f"{CONFIGS}/tiny_defeat.yaml"]
    argv += ["MODEL.DEFEAT.TEACHER.WEIGHTS", teacher_weights, "DATASETS.TRAIN", "('defeat_demo_train',)"]
    argv += ["DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", str(out)]
    argv += ["MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "MODEL.DEFEAT.BALANCE.TARGET_RATIO", "2.0"]
    argv += ["MODEL.DEFEAT.BALANCE.ITERS", "2"]
    finish([start("train_net", argv, str(tmp_path / "w"), env=env)])
    main, worker = (out / "log.txt").read_text(), (out / "log.txt.rank1").read_text()
    assert "MODEL.DEFEAT.NECK.SCALE_BASE auto -> " in main and "SCALE_BASE auto" not in worker
    factor = float(BALANCE.search(main).group(2))
    a, b = rank_weights(str(tmp_path / "w"), 2)
    for state in (a, b):
        assert int(state["distiller.balance_set_at"]) == 1
        assert float(state["distiller.balance_factor"]) == pytest.approx(factor, rel=2e-3)
    assert torch.equal(a["distiller.balance_factor"], b["distiller.balance_factor"])
    saved = yaml.safe_load(open(out / "config.yaml"))["MODEL"]["DEFEAT"]["NECK"]["SCALE_BASE"]
    assert isinstance(saved, float) and saved > 0
