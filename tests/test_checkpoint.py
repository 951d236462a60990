"""Atomic checkpoints, and resuming a SIGKILLed DeFeat run at the right iteration and KD weight."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.nn as nn
from helpers import CONFIGS, REPO

from defeat.checkpoint import AtomicDetectionCheckpointer, atomic_write


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")

    def broken(f):
        f.write("partial")
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), broken, mode="w")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]


def test_checkpointer_failure_during_save_leaves_last_checkpoint_loadable(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    ckpt = AtomicDetectionCheckpointer(model, str(tmp_path))
    ckpt.save("model_0000001")
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)

    def dying_save(obj, f, *a, **k):
        f.write(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        ckpt.save("model_0000002")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    fresh = torch.nn.Linear(3, 2)
    AtomicDetectionCheckpointer(fresh, str(tmp_path)).resume_or_load("", resume=True)
    assert all(torch.equal(fresh.state_dict()[k], good[k]) for k in good)


def _train_cmd(out, teacher_weights, data, max_iter, resume=False):
    return [
        sys.executable,
        os.path.join(REPO, "train_net.py"),
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        *(["--resume"] if resume else []),
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        "MODEL.DEFEAT.LOSS_SCHEDULE",
        "linear",
        "DATASETS.TRAIN",
        f"('{data[0]}',)",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        out,
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
    ]


@pytest.mark.heavy(seconds=35)
def test_sigkill_then_resume_continues_iteration_and_kd_schedule(teacher_weights, tmp_path, monkeypatch):
    data_root = tmp_path / "data"
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", str(data_root))
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "8")
    monkeypatch.setenv("DEFEAT_DEMO_NUM_VAL", "2")
    data = ("defeat_demo_train", "defeat_demo_val")  # registered by train_net from the env above
    out = str(tmp_path / "run")
    proc = subprocess.Popen(
        _train_cmd(out, teacher_weights, data, 1000), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    tag = os.path.join(out, "last_checkpoint")
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if os.path.exists(tag) and open(tag).read() == "model_0000003.pth":
                break
            assert proc.poll() is None, "training exited before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint at iteration 3 within 240 s")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = open(tag).read()
    step = int(last[len("model_") : -len(".pth")])
    assert step >= 3
    saved = torch.load(os.path.join(out, last), map_location="cpu", weights_only=False)
    assert saved["iteration"] == step and not any(k.startswith("teacher") for k in saved["model"])

    subprocess.run(
        _train_cmd(out, teacher_weights, data, step + 3, resume=True),
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert f"Starting training from iteration {step + 1}" in open(os.path.join(out, "log.txt")).read()
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    last = rows[-1]  # Detectron2 writes metrics every 20 iterations and at the end
    assert last["iteration"] == step + 2
    # The KD schedule continues from the checkpoint's iteration: linear, 1 - it / MAX_ITER.
    assert last["defeat/kd_weight"] == pytest.approx(1 - (step + 2) / (step + 3))


def test_missing_start_weights_are_refused_naming_the_setting(tmp_path):
    """A local MODEL.WEIGHTS that is not there stops the run with the setting named (Detectron2
    only asserts); an existing file loads, '' starts from scratch, a resumable run ignores it."""
    model = nn.Linear(3, 2)
    (tmp_path / "run").mkdir()
    ckpt = AtomicDetectionCheckpointer(model, save_dir=str(tmp_path / "run"))
    missing = str(tmp_path / "teacher" / "model_final.pth")
    for resume in (False, True):  # nothing to resume from: the path is what would load
        with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS: '.*teacher/model_final.pth' is not a file"):
            ckpt.resume_or_load(missing, resume=resume)
    assert ckpt.resume_or_load("", resume=False) == {}
    saved = tmp_path / "w.pth"
    torch.save({"model": {"weight": torch.ones(2, 3), "bias": torch.zeros(2)}}, saved)
    ckpt.resume_or_load(str(saved), resume=False)
    assert torch.equal(model.weight, torch.ones(2, 3))
    with torch.no_grad():
        model.weight.fill_(7.0)
    ckpt.save("model_final")  # now a run to resume: MODEL.WEIGHTS is not read
    with torch.no_grad():
        model.weight.zero_()
    ckpt.resume_or_load(missing, resume=True)
    assert torch.equal(model.weight, torch.full((2, 3), 7.0))  # the run's checkpoint was loaded


def test_strict_loading_leaves_out_defeats_own_tensors_but_refuses_a_missing_student_one(
    teacher_weights, tmp_path, caplog
):
    """A DeFeat checkpoint into its plain student (as evaluation and prediction do): the adapters are
    left out with one INFO line (no Detectron2 'not used by the model' list), the student's tensors
    all load; a student tensor missing from the file is still refused."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from helpers import defeat_cfg

    from defeat.checkpoint import defeat_only_keys, load_weights_strictly
    from defeat.errors import WeightsError
    from defeat.modeling.meta_arch.common import build_eval_model

    cfg = defeat_cfg(teacher_weights)
    torch.manual_seed(3)
    trained = build_model(cfg)
    DetectionCheckpointer(trained, str(tmp_path)).save("defeat")
    saved = torch.load(tmp_path / "defeat.pth", map_location="cpu")["model"]
    adapters = sorted(k for k in saved if k.startswith("distiller."))
    assert adapters and all(k.startswith("distiller.adapters.") for k in adapters)

    student = build_eval_model(cfg)
    assert not any(k.startswith("distiller.") for k in student.state_dict())
    with caplog.at_level("INFO"):
        load_weights_strictly(student, str(tmp_path / "defeat.pth"))
    assert "not used by the model" not in caplog.text
    said = [r.getMessage() for r in caplog.records if "DeFeat's own" in r.getMessage()]
    assert said == [
        f"Left out {len(adapters)} tensors of {tmp_path / 'defeat.pth'} that are DeFeat's own "
        "(distiller.adapters.*): used only while distilling, not by GeneralizedRCNN"
    ]
    theirs = {k: v for k, v in trained.state_dict().items() if not k.startswith("distiller.")}
    ours = student.state_dict()
    assert set(ours) == set(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)

    # Only keys the model lacks, with or without DDP's "module."; a DeFeat model keeps its own.
    assert defeat_only_keys({f"module.{k}": 0 for k in adapters}, ours) == [f"module.{k}" for k in adapters]
    assert defeat_only_keys(saved, trained.state_dict()) == []

    missing = "roi_heads.box_predictor.cls_score.weight"
    torch.save({"model": {k: v for k, v in saved.items() if k != missing}}, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match=rf"1 tensors missing from the checkpoint: {missing}"):
        load_weights_strictly(build_eval_model(cfg), str(tmp_path / "partial.pth"))
