"""Red team: hostile inputs of careless or confused users to the training entry points
(``train_net.py``, ``lazy_train_net.py``), both kinds of config, datasets, weights, environment
variables and the Python API, each fed here and its outcome seen. The tools, ``python -m defeat
run``, the demo and the benchmarks are in ``tests/analysis/test_red_team_tools.py``.

Outcome before the fixes: *clear* (one line naming the setting or file and the fix, nothing
written), *handled* (works, or a sensible warning), *unclear* (an error, vague or misleading),
*silently wrong*, *crash* (a traceback), *data lost*. Every row is clear or handled now.

| # | entry point / config | hostile input | before | fix |
|---|---|---|---|---|
| 1 | train_net, YAML | ``OUTPUT_DIR ''`` | data lost (the failed start removed the current folder) | 876ffa1 |
| 2 | lazy_train_net | ``train.output_dir=''`` | data lost (same) | 876ffa1 |
| 3 | lazy_train_net | ``train.output_dir=null`` | silently wrong (a folder named ``None``) | 876ffa1 |
| 4 | train_net | OUTPUT_DIR a link to a missing folder | data lost (link deleted) + traceback | 876ffa1 |
| 5 | train_net | OUTPUT_DIR under such a link | data lost (link deleted) | 876ffa1 |
| 6 | YAML file | ``OUTPUT_DIR: "~/defeat_runs/r1"`` | silently wrong (creates ``./~``) | 876ffa1 |
| 7 | YAML file | ``OUTPUT_DIR: "$SCRATCH/r1"`` | silently wrong (``./$SCRATCH``) | 876ffa1 |
| 8 | YAML file | ``OUTPUT_DIR: "${SCRATCH}/r1"`` | silently wrong | 876ffa1 |
| 9 | train_net | OUTPUT_DIR with spaces and unicode | handled | |
| 10 | train_net | a LazyConfig ``.py``, no overrides | crash (``Missing key freeze``) | 243a5f8 |
| 11 | train_net | a ``.py`` with ``KEY VALUE`` overrides | unclear (about the overrides' form) | 243a5f8 |
| 12 | lazy_train_net | a YAML config | crash (``AttributeError: train``) | 243a5f8 |
| 13 | train_net | a LazyConfig run's saved ``config.yaml`` | unclear (yacs: "not a valid type") | e4b5016 |
| 14 | lazy_train_net | the same ``config.yaml`` | unclear (read as YAML, same error) | e4b5016 |
| 15 | train_net | an empty YAML file (comments only) | unclear (``NoneType is not iterable``) | 243a5f8 |
| 16 | train_net | a folder as ``--config-file`` | unclear ("not found") | 243a5f8 |
| 17 | YAML override | ``DATASETS.TRAIN (mine,)`` (unquoted) | unclear (yacs type mismatch) | 243a5f8 |
| 18 | YAML override | ``MODEL.DEFEAT.HEAD.ENABLED yes`` | unclear (same) | 243a5f8 |
| 19 | YAML override | ``MODEL.DEFEAT.WARMUP_ITERS 1e3`` | unclear (same) | 243a5f8 |
| 20 | YAML file | ``BG_WEIGHT: 4`` (an int for a float) | unclear (same) | 243a5f8 |
| 21 | train_net | ``SOLVER.MAX_ITER 0`` | crash (fvcore's scheduler) | fa3191e |
| 22 | train_net | ``SOLVER.IMS_PER_BATCH 0`` | crash (loader assertion) | fa3191e |
| 23 | train_net | ``SOLVER.CHECKPOINT_PERIOD 0`` | crash after the start (ZeroDivisionError) | fa3191e |
| 24 | lazy_train_net | ``train.max_iter=-1`` | crash | fa3191e |
| 25 | lazy_train_net | ``dataloader.train.total_batch_size=0`` | crash | fa3191e |
| 26 | lazy_train_net | ``train.checkpointer.period=0`` | crash after the start | fa3191e |
| 27 | lazy_train_net | ``train.log_period=0`` | crash after the start | fa3191e |
| 28 | train_net | ``DATASETS.TRAIN`` lists a set twice | silently wrong (each image twice) | fa3191e |
| 29 | train_net | ``DATASETS.TRAIN ('mine', '')`` | crash (MetadataCatalog assertion) | fa3191e |
| 30 | train_net | ``DATASETS.TEST`` lists a set twice | silently wrong (evaluated twice) | fa3191e |
| 31 | lazy_train_net | ``dataloader.train.dataset.names=[a,a]`` | silently wrong | fa3191e |
| 32 | train_net | ``MODEL.DEVICE gpu`` | crash (torch, at the model build) | fa3191e |
| 33 | lazy_train_net | ``train.device=CPU`` | crash | fa3191e |
| 34 | both scripts | ``--num-gpus -2`` | silently wrong (one process) | fa3191e |
| 35 | both scripts | ``--num-machines 0`` | silently wrong (one process) | fa3191e |
| 36 | both scripts | ``--num-machines 2 --machine-rank 2`` | crash (the workers' process group) | fa3191e |
| 37 | both scripts | ``--machine-rank -1`` | crash (same) | fa3191e |
| 38 | both scripts | ``--num-gpus 0`` | handled (one process) | |
| 39 | train_net | ``--resume``: numbered checkpoints only | unclear (said "starts from the beginning") | fa3191e |
| 40 | MODEL.WEIGHTS | a pickle of a list | crash (AttributeError) | 44bb041 |
| 41 | MODEL.WEIGHTS | a pickle of numbers | crash (ValueError) | 44bb041 |
| 42 | MODEL.WEIGHTS | ``torch.save`` of a list | crash (AttributeError) | 44bb041 |
| 43 | MODEL.WEIGHTS | another model's checkpoint (no tensor fits) | silently wrong (trains from random) | 44bb041 |
| 44 | MODEL.WEIGHTS | a backbone-only checkpoint | handled | |
| 45 | TEACHER.WEIGHTS | a pickle of a list | clear | |
| 46 | dataset json | a UTF-8 byte order mark | clear | |
| 47 | dataset json | text after the JSON | clear | |
| 48 | dataset json | a box of negative width, through train_net | crash (ValueError traceback) | ab06146 |
| 49 | dataset images | an image that is a folder | unclear ("file not found") | ab06146 |
| 50 | dataset images | an image that is a link to nothing | unclear ("file not found") | ab06146 |
| 51 | dataset json | category ids from 0 | handled | |
| 52 | dataset json | every annotation id the same | clear | |
| 53 | dataset json | a flat polygon ``[x1, y1, ...]`` | unclear (``int has no len()``) | ab06146 |
| 54 | dataset json, box model | a polygon of 2 points | silently wrong (Detectron2 drops the box) | ab06146 |
| 55 | dataset json, mask model | the same | silently wrong | ab06146 |
| 56 | DETECTRON2_DATASETS | a builtin set not under it | unclear (names the json only) | fa3191e |
| 57 | DEFEAT_COCO_DATASETS | a builtin dataset's name | clear | |
| 58 | DEFEAT_COCO_DATASETS | a folder for the json | clear | |
| 59 | DEFEAT_TRACEBACK | ``" TRUE "`` | handled | |
| 60 | DEFEAT_TRACEBACK | ``Off`` | handled | |
| 61 | DEFEAT_TRACEBACK | ``no`` | handled | |
| 62 | add_defeat_config | called twice | silently wrong (values reset) | 243a5f8 |
| 63 | add_defeat_config | a frozen config | crash (yacs AttributeError) | 243a5f8 |
| 64 | add_defeat_config | ``None`` | crash | 243a5f8 |
| 65 | add_defeat_config | a LazyConfig | crash | 243a5f8 |
| 66 | DeFeatDistiller | ``head_enabled=np.bool_(True)`` | unclear ("True must be True or False") | 243a5f8 |
| 67 | DeFeatDistiller | ``np.float32`` weight, ``np.int64`` warm-up | handled | |
| 68 | DeFeatDistiller | a ``torch.tensor`` weight | clear | |
| 69 | register_coco_dataset | name ``""`` | crash (assertion) | ab06146 |
| 70 | register_coco_dataset | name ``"a;b"`` | silently wrong (breaks $DEFEAT_COCO_DATASETS) | ab06146 |
| 71 | register_coco_dataset | a folder as the json | unclear ("not found") | ab06146 |
| 72 | register_coco_dataset | a file as the image folder | unclear ("not found") | ab06146 |
| 73 | train_net --overwrite | Ctrl-C while starting | handled (earlier run back) | |
| 74 | train_net | Ctrl-C in a hook mid-run | handled (records kept, lock gone) | |

Before: 4 data lost, 14 silently wrong, 22 crash, 17 unclear, 7 clear, 10 handled (74). After:
60 clear, 14 handled.
"""

import importlib
import json
import logging
import os
import pickle
import uuid

import numpy as np
import pytest
import torch
from coco_files import write_coco
from helpers import CONFIGS, defeat_cfg, make_cfg, script_main, script_run_argv

from defeat.engine.entry import run_entry_point
from defeat.engine.run_folder import LOCK_NAME
from defeat.errors import (
    ConfigFileError,
    DataCheckError,
    DatasetSpecError,
    DeFeatConfigError,
    DeFeatError,
    MachineError,
    OutputError,
    TeacherLoadError,
    WeightsError,
)

YAML = f"{CONFIGS}/tiny_base.yaml"
LAZY = f"{CONFIGS}/tiny_base.py"


# ---- helpers ----


def _name(prefix="rt"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _dataset(tmp_path, change=None, **kw):
    """A 2-image, 2-class COCO json as files (``change(data, image_folder)`` edits it first):
    ``(name, --dataset spec, json, image folder)``."""
    json_file, images = write_coco(str(tmp_path / _name("data")), num_images=2, **kw)
    if change is not None:
        with open(json_file) as f:
            data = json.load(f)
        change(data, images)
        with open(json_file, "w") as f:
            json.dump(data, f)
    name = _name()
    return name, f"{name}={json_file}:{images}", json_file, images


def _yaml_argv(out, ds, *extra, config=YAML, flags=()):
    return script_run_argv(config, ds, out, 2, *extra, flags=flags)


def _lazy_argv(out, ds, *extra, config=LAZY, flags=()):
    return script_run_argv(config, ds, out, 2, *extra, flags=flags)


def _script(name):
    return importlib.import_module(name)


def _main(script, argv):
    return script_main(script, argv)


def _setup(script, argv):
    module = _script(script)
    return module.setup(module.parse_args(argv))


def _line(capsys, monkeypatch, call, script="t.py"):
    """The one line an entry point prints for ``call()``'s error (exit status 1, no traceback)."""
    monkeypatch.delenv("DEFEAT_TRACEBACK", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_entry_point(call, script=script)
    err = capsys.readouterr().err
    assert e.value.code == 1 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{script}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _listing(folder):
    return sorted(os.listdir(folder))


def _snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder``, and its folders."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), folder) + "/"] = b""
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                out[os.path.relpath(os.path.join(root, f), folder)] = fh.read()
    return out


class _Records(logging.Handler):
    """The messages of logger ``name`` (and its children) while in a ``with`` block, whatever the
    propagation Detectron2's ``setup_logger`` left."""

    def __init__(self, name):
        super().__init__(logging.DEBUG)
        self.logger, self.messages = logging.getLogger(name), []

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)

    @property
    def text(self):
        return "\n".join(self.messages)


# ---- the output folder: nothing of the user's removed, no folder of a literal name ----


def test_empty_output_dir_is_refused_and_the_current_folder_kept(tmp_path, monkeypatch, capsys):
    """The start that failed on OUTPUT_DIR '' removed the folder it was run from."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    ds = _dataset(tmp_path)
    line = _line(capsys, monkeypatch, lambda: _main("train_net", _yaml_argv("", ds)), "train_net.py")
    assert "OUTPUT_DIR is empty; set it to a folder" in line
    assert _listing(work) == ["mine.txt"]


def test_a_failed_start_never_removes_a_folder_that_was_there(tmp_path, monkeypatch):
    """Behind the path checks (rows 1-5): the folder a failed start removes is only one it created."""
    from defeat.engine.run_folder import RunFolder

    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    monkeypatch.setattr(RunFolder, "_check_writable", lambda self: None)
    with pytest.raises(OSError):
        with RunFolder(""):
            pass
    assert _listing(work) == ["mine.txt"]


@pytest.mark.parametrize("value", ["", "null"])
def test_lazy_output_dir_empty_or_null_is_refused(tmp_path, monkeypatch, value):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    with pytest.raises(OutputError, match=r"train.output_dir is empty"):
        _main("lazy_train_net", _lazy_argv(value, _dataset(tmp_path)))
    assert _listing(work) == ["mine.txt"]


def test_output_dir_that_is_a_link_to_nothing_is_refused_and_the_link_kept(tmp_path):
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "on_a_disk_not_mounted")
    with pytest.raises(OutputError, match=r"is a link to .*on_a_disk_not_mounted', which does not exist"):
        _main("train_net", _yaml_argv(link, _dataset(tmp_path)))
    assert link.is_symlink() and not link.exists()
    with pytest.raises(OutputError, match=r"is a link to"):  # a folder below the link too
        _main("train_net", _yaml_argv(link / "deeper", _dataset(tmp_path)))
    assert link.is_symlink()


@pytest.mark.parametrize("value", ["~/defeat_runs/r1", "$SCRATCH/r1", "${SCRATCH}/r1"])
def test_output_dir_with_unexpanded_home_or_variable_is_refused(tmp_path, monkeypatch, value):
    """A config file's OUTPUT_DIR is not expanded: the run would create ./~ or ./$SCRATCH."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRATCH", "/scratch/me")
    config = tmp_path / "mine.yaml"
    config.write_text(f'_BASE_: "{YAML}"\nOUTPUT_DIR: "{value}"\n')
    argv = _yaml_argv("x", _dataset(tmp_path), config=config)
    argv = argv[: argv.index("OUTPUT_DIR")] + argv[argv.index("OUTPUT_DIR") + 2 :]
    with pytest.raises(OutputError, match=r"holds '~' or '\$VARIABLE', which a config does not expand.*e\.g\. '/"):
        _main("train_net", argv)
    assert not {"~", "$SCRATCH", "${SCRATCH}"} & set(os.listdir(tmp_path))


def test_output_dir_with_spaces_and_unicode_works(tmp_path):
    out = tmp_path / "my runs" / "déjà vu — ü"
    cfg = _setup("train_net", _yaml_argv(out, _dataset(tmp_path)))
    assert cfg.OUTPUT_DIR == str(out) and (out / "config.yaml").is_file()


# ---- config files of the other kind, empty, a folder; values of another type ----


def test_lazy_config_given_to_train_net_names_lazy_train_net(tmp_path, monkeypatch, capsys):
    line = _line(capsys, monkeypatch, lambda: _main("train_net", ["--config-file", LAZY]), "train_net.py")
    assert "is a LazyConfig, which train_net.py does not train: run lazy_train_net.py with it" in line
    with pytest.raises(
        ConfigFileError, match=r"run lazy_train_net.py with it \(the same options; its overrides are key"
    ):
        _main("train_net", _yaml_argv(tmp_path / "o", _dataset(tmp_path), config=LAZY))
    assert not (tmp_path / "o").exists()


def test_yaml_config_given_to_lazy_train_net_names_train_net(tmp_path, monkeypatch, capsys):
    line = _line(capsys, monkeypatch, lambda: _main("lazy_train_net", ["--config-file", YAML]), "lazy_train_net.py")
    assert "is a YAML config (Detectron2's CfgNode), which lazy_train_net.py does not train: run train_net.py" in line


def test_a_lazy_runs_saved_config_yaml_is_recognised_by_both_scripts(tmp_path):
    from detectron2.config import LazyConfig

    saved = tmp_path / "config.yaml"
    LazyConfig.save(LazyConfig.load(LAZY), str(saved))  # holds python tags (ShapeSpec): not plain YAML
    with pytest.raises(ConfigFileError, match=r"is a LazyConfig, which train_net.py does not train"):
        _main("train_net", ["--config-file", str(saved)])
    cfg = _script("lazy_train_net").load_config(_script("lazy_train_net").parse_args(["--config-file", str(saved)]))
    assert cfg.model.roi_heads.box_head.input_shape.channels == 32  # the LazyConfig, python objects and all


def test_empty_yaml_config_and_a_folder_are_named(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# my config, to be written\n")
    with pytest.raises(ConfigFileError, match=r"empty.yaml' is empty \(or only comments\): a YAML config needs"):
        _setup("train_net", _yaml_argv(tmp_path / "o", _dataset(tmp_path), config=empty))
    with pytest.raises(ConfigFileError, match=r"config file '.*configs' is a folder; give the .yaml or .py"):
        _setup("train_net", _yaml_argv(tmp_path / "o", _dataset(tmp_path), config=CONFIGS))


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("DATASETS.TRAIN", "(mine,)", r"DATASETS.TRAIN = \(mine,\) is a str, .*holds a tuple .*e\.g\. \('mine',\)"),
        ("MODEL.DEFEAT.HEAD.ENABLED", "yes", r"HEAD.ENABLED = yes is a str, but the config holds a bool .*True or Fal"),
        ("MODEL.DEFEAT.WARMUP_ITERS", "1e3", r"WARMUP_ITERS = 1000.0 is a float, .*holds an int .*whole number"),
    ],
)
def test_yaml_override_of_another_type_says_how_to_write_it(key, value, match):
    with pytest.raises(ConfigFileError, match=match):
        make_cfg(f"{CONFIGS}/tiny_defeat.yaml", key, value)


def test_whole_number_for_a_float_in_a_yaml_file_says_write_4_0(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nMODEL:\n  DEFEAT:\n    NECK:\n      BG_WEIGHT: 4\n')
    with pytest.raises(
        ConfigFileError, match=r"NECK.BG_WEIGHT = 4 is an int, .*float there \(4.0\): write it with a dec"
    ):
        make_cfg(config)
    config.write_text(config.read_text().replace("BG_WEIGHT: 4", "BG_WEIGHT: 4.0"))
    assert make_cfg(config).MODEL.DEFEAT.NECK.BG_WEIGHT == 4.0


# ---- run lengths, batches and periods: refused before the start, not at step 1 ----


@pytest.mark.parametrize(
    "script, extra, match",
    [
        (
            "train_net",
            ["SOLVER.MAX_ITER", "0"],
            r"SOLVER.MAX_ITER = 0: a training run needs a whole number of at least 1",
        ),
        ("train_net", ["SOLVER.IMS_PER_BATCH", "0"], r"SOLVER.IMS_PER_BATCH = 0"),
        ("train_net", ["SOLVER.CHECKPOINT_PERIOD", "0"], r"SOLVER.CHECKPOINT_PERIOD = 0"),
        ("lazy_train_net", ["train.max_iter=-1"], r"train.max_iter = -1"),
        ("lazy_train_net", ["dataloader.train.total_batch_size=0"], r"dataloader.train.total_batch_size = 0"),
        ("lazy_train_net", ["train.checkpointer.period=0"], r"train.checkpointer.period = 0"),
        ("lazy_train_net", ["train.log_period=0"], r"train.log_period = 0"),
    ],
)
def test_run_counts_below_one_are_refused_before_anything_is_written(tmp_path, script, extra, match):
    """fvcore's scheduler, Detectron2's loader assertion, or a ZeroDivisionError after the start."""
    out = tmp_path / "run"
    ds = _dataset(tmp_path)
    argv = _yaml_argv(out, ds, *extra) if script == "train_net" else _lazy_argv(out, ds, *extra)
    with pytest.raises(DataCheckError, match=match):
        _main(script, argv)
    assert not out.exists()


# ---- dataset lists ----


@pytest.mark.parametrize(
    "script, names, match",
    [
        ("train_net", "DUP", r"DATASETS.TRAIN = \['(\w+)', '\1'\] lists '\1' more than once"),
        ("train_net", "BLANK", r"DATASETS.TRAIN = \['\w+', ''\] holds an empty dataset name"),
        ("train_net", "TEST_DUP", r"DATASETS.TEST = \['(\w+)', '\1'\] lists '\1' more than once"),
        ("lazy_train_net", "DUP", r"dataloader.train.dataset.names = \['(\w+)', '\1'\] lists '\1' more than once"),
    ],
)
def test_dataset_listed_twice_or_empty_is_refused(tmp_path, script, names, match):
    ds = _dataset(tmp_path)
    name = ds[0]
    if script == "train_net":
        key, value = {
            "DUP": ("DATASETS.TRAIN", f"('{name}', '{name}')"),
            "BLANK": ("DATASETS.TRAIN", f"('{name}', '')"),
            "TEST_DUP": ("DATASETS.TEST", f"('{name}', '{name}')"),
        }[names]
        argv = _yaml_argv(tmp_path / "o", ds, key, value)
    else:
        argv = _lazy_argv(tmp_path / "o", ds, f"dataloader.train.dataset.names=[{name},{name}]")
    with pytest.raises(DataCheckError, match=match):
        _setup(script, argv)


# ---- the machine and the processes ----


@pytest.mark.parametrize(
    "script, extra, match",
    [
        (
            "train_net",
            ["MODEL.DEVICE", "gpu"],
            r"MODEL.DEVICE is 'gpu', not a device name torch reads.*MODEL.DEVICE cpu",
        ),
        (
            "lazy_train_net",
            ["train.device=CPU"],
            r"train.device is 'CPU', not a device name torch reads.*train.device=c",
        ),
    ],
)
def test_device_name_torch_cannot_read_is_refused(tmp_path, script, extra, match):
    ds = _dataset(tmp_path)
    argv = _yaml_argv(tmp_path / "o", ds, *extra) if script == "train_net" else _lazy_argv(tmp_path / "o", ds, *extra)
    with pytest.raises(MachineError, match=match):
        _setup(script, argv)


@pytest.mark.parametrize(
    "options, message",
    [
        (["--num-gpus", "-2"], "--num-gpus -2: give the number of processes per machine"),
        (["--num-machines", "0"], "--num-machines 0: give the number of machines"),
        (["--num-machines", "2", "--machine-rank", "2"], "--machine-rank 2: with --num-machines 2 it is one of 0..1"),
        (["--machine-rank", "-1"], "--machine-rank -1: with --num-machines 1 it is one of 0..0"),
    ],
)
def test_process_counts_launch_would_misread_are_refused(capsys, options, message):
    with pytest.raises(SystemExit) as e:
        _script("lazy_train_net").parse_args(["--config-file", LAZY, *options])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_num_gpus_0_runs_one_process(tmp_path):
    from defeat.engine.script import launch_main

    args = _script("train_net").parse_args(["--config-file", YAML, "--num-gpus", "0"])
    seen = []
    launch_main(seen.append, args)  # Detectron2's launch: world size 0 runs main here, once
    assert seen == [args]


# ---- resume ----


def test_resume_without_last_checkpoint_names_the_numbered_checkpoint_it_resumes(tmp_path):
    from defeat.checkpoint import AtomicDetectionCheckpointer
    from defeat.engine.outputs import check_run_output

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}, "iteration": 3}, out / "model_0000003.pth")
    torch.save({"model": {}, "iteration": 7}, out / "model_0000007.pth")
    with _Records("defeat.engine.outputs") as log:
        assert check_run_output(str(out), {}, resume=True) == []
    assert "holds no last_checkpoint; the run resumes from model_0000007.pth" in log.text
    assert "starts from the beginning" not in log.text
    assert AtomicDetectionCheckpointer(torch.nn.Linear(1, 1), str(out))._resume_candidates()[0].endswith("7.pth")


# ---- weights of another kind, or of another model ----


@pytest.fixture(scope="module")
def tiny_model():
    from detectron2.modeling import build_model

    return build_model(make_cfg(YAML))


def _load(model, tmp_path, weights):
    from defeat.checkpoint import AtomicDetectionCheckpointer
    from defeat.engine.start import load_or_resume

    return load_or_resume(AtomicDetectionCheckpointer(model, str(tmp_path / "ck")), weights, resume=False)


def _write(path, obj, how):
    if how == "pickle":
        with open(path, "wb") as f:
            pickle.dump(obj, f)
    else:
        torch.save(obj, str(path))
    return str(path)


@pytest.mark.parametrize(
    "file, obj, how, match",
    [
        ("list.pkl", [1, 2, 3], "pickle", r"list.pkl is not a checkpoint \(AttributeError"),
        (
            "numbers.pkl",
            {"lr": 0.1, "epoch": 3},
            "pickle",
            r"numbers.pkl holds no model weights: its entry 'lr' is a float",
        ),
        ("list.pth", [1, 2], "torch", r"list.pth holds a list where a checkpoint holds its tensors"),
    ],
)
def test_weights_file_of_another_kind_names_the_key(tmp_path, tiny_model, file, obj, how, match):
    weights = _write(tmp_path / file, obj, how)
    with pytest.raises(WeightsError, match=rf"MODEL.WEIGHTS: cannot read the weights .*{match}.*copy it again, or set"):
        _load(tiny_model, tmp_path, weights)


def test_weights_of_another_model_are_refused_but_a_backbone_loads(tmp_path, tiny_model):
    """Detectron2 would warn about every tensor and train from random weights."""
    other = _write(tmp_path / "other.pth", {"model": {"head.fc.weight": torch.zeros(4, 4)}}, "torch")
    with pytest.raises(WeightsError, match=r"MODEL.WEIGHTS: none of the tensors of '.*other.pth' fits the model"):
        _load(tiny_model, tmp_path, other)
    state = {k: v.clone() for k, v in tiny_model.state_dict().items() if k.startswith("backbone.bottom_up.")}
    backbone = _write(tmp_path / "backbone.pth", {"model": state}, "torch")
    assert _load(tiny_model, tmp_path, backbone) is False  # a fresh start from a partial checkpoint


def test_teacher_weights_of_another_kind_name_the_teacher_key(tmp_path):
    weights = _write(tmp_path / "list.pkl", [1, 2, 3], "pickle")
    from detectron2.modeling import build_model

    with pytest.raises(TeacherLoadError, match=r"cannot read teacher weights '.*list.pkl'"):
        build_model(defeat_cfg(weights))


# ---- datasets as written ----


def _first_anno(change):
    def edit(data, images):
        change(data["annotations"][0])

    return edit


def test_json_with_a_byte_order_mark_or_trailing_text_is_refused_naming_the_file(tmp_path):
    name, spec, json_file, _ = _dataset(tmp_path)
    text = open(json_file).read()
    with open(json_file, "w", encoding="utf-8-sig") as f:
        f.write(text)
    with pytest.raises(DataCheckError, match=r"train.json is not valid JSON: Unexpected UTF-8 BOM"):
        _setup("train_net", _yaml_argv(tmp_path / "o", (name, spec)))
    name, spec, json_file, _ = _dataset(tmp_path)
    with open(json_file, "a") as f:
        f.write("\n}\n")
    with pytest.raises(DataCheckError, match=r"train.json is not valid JSON: Extra data: line 2"):
        _setup("train_net", _yaml_argv(tmp_path / "o", (name, spec)))


def test_box_of_negative_width_is_one_line_through_train_net(tmp_path, monkeypatch, capsys):
    ds = _dataset(tmp_path, _first_anno(lambda a: a["bbox"].__setitem__(2, -5)))
    monkeypatch.setattr(_script("train_net"), "Trainer", None)  # never reached
    line = _line(capsys, monkeypatch, lambda: _main("train_net", _yaml_argv(tmp_path / "o", ds)), "train_net.py")
    assert f"dataset '{ds[0]}': image" in line and "has a box with x2 < x1: bbox [" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["folder", "link"])
def test_training_image_that_is_a_folder_or_a_link_to_nothing_is_named_so(tmp_path, kind):
    from defeat.engine.script import load_and_check_training_data

    def edit(data, images):
        path = os.path.join(images, data["images"][0]["file_name"])
        os.remove(path)
        if kind == "folder":
            os.makedirs(path)
        else:
            os.symlink(os.path.join(images, "gone", "img.png"), path)

    ds = _dataset(tmp_path, edit)
    _setup("train_net", _yaml_argv(tmp_path / "o", ds))
    said = "a folder, not an image file" if kind == "folder" else r"a link to '.*gone/img.png', which does not exist"
    with pytest.raises(DataCheckError, match=rf"img_000.png: {said}"):
        load_and_check_training_data([ds[0]], 2, "MODEL.ROI_HEADS.NUM_CLASSES")


def test_category_ids_from_zero_train_as_the_same_classes(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    def from_zero(data, images):
        for c in data["categories"]:
            c["id"] -= 1
        for a in data["annotations"]:
            a["category_id"] -= 1

    ds = _dataset(tmp_path, from_zero)
    _setup("train_net", _yaml_argv(tmp_path / "o", ds))
    dicts = DatasetCatalog.get(ds[0])
    assert MetadataCatalog.get(ds[0]).thing_classes == ["square", "bar"]
    written = json.load(open(ds[2]))["annotations"]
    assert sorted(a["category_id"] for r in dicts for a in r["annotations"]) == sorted(
        a["category_id"] for a in written
    )


def test_repeated_annotation_ids_name_the_json(tmp_path):
    from detectron2.data import DatasetCatalog

    def same_ids(data, images):
        for a in data["annotations"]:
            a["id"] = 7

    ds = _dataset(tmp_path, same_ids)
    _setup("train_net", _yaml_argv(tmp_path / "o", ds))
    with pytest.raises(DatasetSpecError, match=rf"dataset '{ds[0]}': cannot load .*train.json.*not unique"):
        DatasetCatalog.get(ds[0])


def test_flat_polygon_is_refused_with_the_brackets_it_needs(tmp_path):
    ds = _dataset(tmp_path, _first_anno(lambda a: a.update(segmentation=[1, 1, 9, 1, 9, 9])))
    with pytest.raises(DataCheckError, match=r"annotations\[0\] .* has a flat 'segmentation' \[1, 1, 9.*list of lists"):
        _setup("train_net", _yaml_argv(tmp_path / "o", ds))


def test_polygon_detectron2_drops_is_warned_for_a_box_model_and_refused_for_a_mask_model(tmp_path):
    from detectron2.data import DatasetCatalog

    ds = _dataset(tmp_path, _first_anno(lambda a: a.update(segmentation=[[1, 1, 9, 1]])))
    with _Records("defeat.data.coco_json") as log:
        _setup("train_net", _yaml_argv(tmp_path / "o", ds))
    assert "1 annotations (the first annotations[0] (id 1, image_id 1)) have a 'segmentation' without a polygon" in (
        log.text
    )
    kept = sum(len(r["annotations"]) for r in DatasetCatalog.get(ds[0]))
    assert kept == len(json.load(open(ds[2]))["annotations"]) - 1  # what the warning says Detectron2 does

    def polygons(data, images):
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            a["segmentation"] = [[x, y, x + w, y, x + w, y + h]]
        data["annotations"][0]["segmentation"] = [[1, 1, 9, 1]]

    ds = _dataset(tmp_path, polygons)
    with pytest.raises(DataCheckError, match=r"without a polygon of 3 or more points.*: fix their polygons"):
        _setup("train_net", _yaml_argv(tmp_path / "o2", ds, config=f"{CONFIGS}/tiny_mask_base.yaml"))


# ---- environment variables ----


def test_builtin_dataset_without_its_files_names_detectron2_datasets(tmp_path, monkeypatch):
    argv = _yaml_argv(tmp_path / "o", _dataset(tmp_path), "DATASETS.TRAIN", "('coco_2017_val',)")
    from detectron2.data import MetadataCatalog

    json_file = MetadataCatalog.get("coco_2017_val").json_file  # under the root Detectron2 read at import
    if os.path.isfile(json_file):
        pytest.skip("COCO is installed here")
    root = json_file.split(os.sep + "coco" + os.sep)[0]
    monkeypatch.setenv("DETECTRON2_DATASETS", root)
    with pytest.raises(
        DataCheckError, match=rf"'coco_2017_val': .* does not exist\..*\$DETECTRON2_DATASETS \('{root}' now"
    ):
        _setup("train_net", argv)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("coco_2017_val=JSON", r"DEFEAT_COCO_DATASETS=.*'coco_2017_val' is already registered with other files"),
        ("mine=FOLDER", r"DEFEAT_COCO_DATASETS='mine=.*': cannot read dataset spec .*must end in .json"),
    ],
)
def test_datasets_variable_with_a_builtin_name_or_a_folder_names_itself(tmp_path, monkeypatch, spec, match):
    from defeat.data.datasets import setup_datasets

    _, _, json_file, _ = _dataset(tmp_path)
    monkeypatch.setenv(
        "DEFEAT_COCO_DATASETS", spec.replace("JSON", json_file).replace("FOLDER", os.path.dirname(json_file))
    )
    with pytest.raises(DeFeatError, match=match):
        setup_datasets()


@pytest.mark.parametrize("value, kept", [(" TRUE ", True), ("Off", False), ("no", False)])
def test_traceback_variable_in_any_case_and_spacing(monkeypatch, capsys, value, kept):
    monkeypatch.setenv("DEFEAT_TRACEBACK", value)

    def fail():
        raise OutputError("OUTPUT_DIR 'x': refused")

    if kept:
        with pytest.raises(OutputError):
            run_entry_point(fail, script="t.py")
    else:
        with pytest.raises(SystemExit):
            run_entry_point(fail, script="t.py")
        assert capsys.readouterr().err == "t.py: error: OUTPUT_DIR 'x': refused\n"


# ---- the Python API ----


def test_add_defeat_config_twice_keeps_the_values_set_between():
    from detectron2.config import get_cfg

    from defeat import add_defeat_config

    cfg = add_defeat_config(get_cfg())
    cfg.MODEL.DEFEAT.NECK.BG_WEIGHT = 9.0
    cfg.MODEL.DEFEAT.TEACHER.WEIGHTS = "t.pth"
    add_defeat_config(cfg)
    assert cfg.MODEL.DEFEAT.NECK.BG_WEIGHT == 9.0 and cfg.MODEL.DEFEAT.TEACHER.WEIGHTS == "t.pth"
    assert cfg.MODEL.DEFEAT.HEAD.TEMPERATURE == 1.0


def test_add_defeat_config_on_a_frozen_config_or_a_lazy_config_says_what_it_takes():
    from detectron2.config import get_cfg
    from omegaconf import OmegaConf

    from defeat import add_defeat_config

    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(DeFeatConfigError, match=r"the config is frozen; call it before cfg.freeze\(\)"):
        add_defeat_config(cfg)
    for other in (None, OmegaConf.create({"model": {}})):
        with pytest.raises(
            DeFeatConfigError, match=r"takes a Detectron2 config \(detectron2.config.get_cfg\(\)\), got"
        ):
            add_defeat_config(other)


def _distiller(**kw):
    from detectron2.layers import ShapeSpec

    from defeat import DeFeatDistiller

    shapes = {f"p{i}": ShapeSpec(channels=8, stride=2**i) for i in range(2, 7)}
    return DeFeatDistiller(student_shapes=shapes, teacher_shapes=shapes, **kw)


def test_distiller_takes_numpy_scalars_as_the_numbers_and_booleans_they_are():
    d = _distiller(head_enabled=np.bool_(True), neck_bg_weight=np.float32(2.5), warmup_iters=np.int64(5))
    assert d.head_enabled is True and d.neck_weights == (1.0, 2.5) and d.warmup_iters == 5
    with pytest.raises(DeFeatConfigError, match=r"NECK.BG_WEIGHT = tensor\(2.\) must be a number, not Tensor"):
        _distiller(neck_bg_weight=torch.tensor(2.0))


@pytest.mark.parametrize(
    "name, json_is, root_is, match",
    [
        ("", "file", "folder", r"dataset name '': give a non-empty name"),
        ("a;b", "file", "folder", r"dataset name 'a;b': give a non-empty name without '=' or ';'"),
        ("NAME", "folder", "folder", r": .* is a folder; give the annotation .json file in it"),
        ("NAME", "file", "file", r": the image folder .*train.json is a file; give the folder"),
    ],
)
def test_register_coco_dataset_refuses_names_and_paths_of_the_wrong_kind(tmp_path, name, json_is, root_is, match):
    from defeat.data.datasets import register_coco_dataset

    _, _, json_file, images = _dataset(tmp_path)
    name = _name() if name == "NAME" else name
    with pytest.raises(DatasetSpecError, match=match):
        register_coco_dataset(
            name,
            json_file if json_is == "file" else os.path.dirname(json_file),
            images if root_is == "folder" else json_file,
        )


# ---- Ctrl-C ----


def test_ctrl_c_while_starting_with_overwrite_puts_the_earlier_run_back(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("metrics.json", "last_checkpoint", "config.yaml", "log.txt", "model_final.pth", "notes.txt"):
        (out / name).write_text(f"the earlier run's {name}\n")
    before = _snapshot(out)

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(_script("train_net"), "Trainer", interrupted)  # after set-aside and config.yaml
    with pytest.raises(KeyboardInterrupt):
        _main("train_net", _yaml_argv(out, _dataset(tmp_path), flags=["--overwrite"]))
    assert _snapshot(out) == before


@pytest.mark.heavy(seconds=10)
def test_ctrl_c_in_a_hook_mid_run_keeps_the_records_and_frees_the_folder(tmp_path, monkeypatch):
    from detectron2.engine import HookBase

    from defeat.engine.trainer import DeFeatTrainer

    class CtrlC(HookBase):
        def after_step(self):
            raise KeyboardInterrupt

    hooks = DeFeatTrainer.build_hooks
    monkeypatch.setattr(DeFeatTrainer, "build_hooks", lambda self: [*hooks(self), CtrlC()])
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _main("train_net", _yaml_argv(out, _dataset(tmp_path)))
    assert not (out / LOCK_NAME).exists()
    assert {"config.yaml", "log.txt", "metrics.json"} <= set(os.listdir(out))
    assert "Starting training from iteration 0" in (out / "log.txt").read_text()
    # the folder is a run now: a new start there is refused, --resume or --overwrite are offered
    with pytest.raises(OutputError, match=r"already holds a run .*--resume"):
        _main("train_net", _yaml_argv(out, _dataset(tmp_path)))
