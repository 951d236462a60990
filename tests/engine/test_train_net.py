"""End to end through train_net.py on a tiny generated dataset: teacher -> DeFeat -> plain eval."""

import json
import logging
import math
import os

import pytest
import torch
from helpers import CONFIGS, data_opts, metrics_rows, train_args


@pytest.fixture(scope="module")
def trained_teacher(tiny_dataset, tmp_path_factory):
    import train_net

    out = str(tmp_path_factory.mktemp("teacher"))
    train_net.main(train_args(f"{CONFIGS}/tiny_teacher.yaml", *data_opts(out), "SOLVER.MAX_ITER", 3))
    return os.path.join(out, "model_final.pth")


def test_defeat_run_then_plain_student_eval(trained_teacher, tmp_path):
    import train_net

    out = str(tmp_path / "defeat")
    cfg = train_net.setup(
        train_args(
            f"{CONFIGS}/tiny_defeat.yaml",
            *data_opts(out),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            trained_teacher,
            "SOLVER.MAX_ITER",
            4,
            "MODEL.DEFEAT.WARMUP_ITERS",
            2,
        )
    )
    trainer = train_net.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    # All four DeFeat losses were logged at every iteration, finite, with the warm-up applied.
    rows = [r for r in metrics_rows(out) if "loss_defeat_neck_obj" in r]
    assert len(rows) >= 1
    for key in ("loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert rows[-1]["defeat/kd_weight"] == 1.0
    # The KD/detection balance: logged in each row, reported once by the hook before the writer
    # (this tiny run's random teacher makes the KD terms dominate: a warning).
    assert all(r["[metric]kd_to_det_ratio"] > 0 for r in rows)
    names = [type(h).__name__ for h in trainer._hooks]
    assert names.index("KDBalanceHook") < names.index("PeriodicWriter")
    level, message = trainer._hooks[names.index("KDBalanceHook")].reported
    assert level == logging.WARNING and "Lower MODEL.DEFEAT.NECK.OBJ_WEIGHT" in message

    # The teacher is bit-identical to its checkpoint after training.
    saved = torch.load(trained_teacher, map_location="cpu", weights_only=False)["model"]
    state = trainer.model.teacher.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in state)

    # The checkpoint holds the student (+ adapters) only.
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher") for k in ckpt["model"])
    assert any(k.startswith("distiller.adapters.") for k in ckpt["model"])

    # --eval-only with the plain student config: no missing keys, the same COCO metrics.
    plain_out = str(tmp_path / "plain")
    res = train_net.main(
        train_args(
            f"{CONFIGS}/tiny_base.yaml",
            *data_opts(plain_out),
            "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth"),
            eval_only=True,
        )
    )
    assert set(res["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    ap, ref = res["bbox"]["AP"], [r for r in metrics_rows(out) if "bbox/AP" in r][-1]["bbox/AP"]
    assert (math.isnan(ap) and math.isnan(ref)) or ap == pytest.approx(ref, abs=1e-6)
    # Stronger than equal AP on an untrained model: the very same detections.
    preds = [json.load(open(os.path.join(d, "inference", "coco_instances_results.json"))) for d in (out, plain_out)]
    assert len(preds[0]) > 0 and preds[0] == preds[1]
