"""--resume never corrupts a run: damaged newest checkpoints fall back, another model is refused."""

import logging
import os

import pytest
import torch
import torch.nn as nn
from helpers import CONFIGS, train_args

from defeat.checkpoint import AtomicDetectionCheckpointer, ResumeError, restore_on_failure


class _Net(nn.Module):
    """A student with DeFeat-style adapters: ``distiller.adapters.<level>``."""

    def __init__(self, levels=("p2", "p3"), k=3, width=4, body=3, fpn=4, head=5, depth=1):
        super().__init__()
        self.body = nn.Linear(body, 2)
        self.blocks = nn.Sequential(*[nn.Linear(2, 2) for _ in range(depth)])
        self.fpn = nn.Conv2d(2, fpn, 1)
        self.head = nn.Linear(fpn, head)
        self.distiller = nn.Module()
        self.distiller.adapters = nn.ModuleDict({f: nn.Conv2d(width, 6, k, padding=k // 2) for f in levels})


class _Iter:
    """A checkpointable holding the iteration, like Detectron2's trainer."""

    def __init__(self):
        self.iter = -1

    def state_dict(self):
        return {"iteration": self.iter}

    def load_state_dict(self, d):
        self.iter = d["iteration"]


def _warnings(ckpt):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    ckpt.logger.addHandler(handler)
    return records


def _save_run(tmp_path, iterations=(1, 3, 5)):
    """Checkpoints at ``iterations`` (weights = iteration), tagged at the last one."""
    net, it = _Net(), _Iter()
    ckpt = AtomicDetectionCheckpointer(net, str(tmp_path), trainer=it)
    for i in iterations:
        with torch.no_grad():
            net.body.weight.fill_(i)
        it.iter = i
        ckpt.save(f"model_{i:07d}")
    return net


def _resume(tmp_path, net=None):
    net, it = net or _Net(), _Iter()
    ckpt = AtomicDetectionCheckpointer(net, str(tmp_path), trainer=it)
    records = _warnings(ckpt)
    ckpt.resume_or_load("", resume=True)
    return net, it, [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def test_truncated_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path):
    _save_run(tmp_path)
    newest = tmp_path / "model_0000005.pth"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated by a full disk or a half copy
    net, it, warnings = _resume(tmp_path)
    assert it.iter == 3 and torch.all(net.body.weight == 3)
    assert len(warnings) == 1 and "Resuming from model_0000003.pth, the newest intact checkpoint" in warnings[0]
    assert "model_0000005.pth" in warnings[0]


def test_missing_tagged_and_garbage_checkpoints_are_skipped(tmp_path):
    _save_run(tmp_path)
    os.remove(tmp_path / "model_0000005.pth")
    (tmp_path / "model_0000003.pth").write_text("not a checkpoint")
    net, it, warnings = _resume(tmp_path)
    assert it.iter == 1 and torch.all(net.body.weight == 1)
    assert "model_0000005.pth (missing)" in warnings[0] and "model_0000003.pth (" in warnings[0]


def test_lost_last_checkpoint_tag_still_resumes_instead_of_starting_over(tmp_path):
    _save_run(tmp_path)
    os.remove(tmp_path / "last_checkpoint")
    net, it, warnings = _resume(tmp_path)
    assert it.iter == 5 and torch.all(net.body.weight == 5) and not warnings


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    _save_run(tmp_path, iterations=(2,))
    (tmp_path / "model_0000002.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ResumeError, match=r"no checkpoint in .* can be read: model_0000002\.pth"):
        _resume(tmp_path)


def test_intact_newest_checkpoint_loads_without_warning(tmp_path):
    _save_run(tmp_path)
    net, it, warnings = _resume(tmp_path)
    assert it.iter == 5 and not warnings


@pytest.mark.parametrize(
    "changed, match",
    [
        (dict(k=1), r"shapes: distiller\.adapters\.p2\.weight \(6, 4, 3, 3\) in the checkpoint vs \(6, 4, 1, 1\)"),
        (dict(levels=("p2",)), r"in the checkpoint only: distiller\.adapters\.p3\.bias"),
        (dict(levels=("p2", "p3", "p4")), r"in the model only: distiller\.adapters\.p4\.bias"),
        (dict(width=8), r"distiller\.adapters\.p2\.weight \(6, 4, 3, 3\) in the checkpoint vs \(6, 8, 3, 3\)"),
        # the student's own tensors, not only the adapters: body, FPN and head widths, depth
        (dict(body=5), r"shapes: body\.weight \(2, 3\) in the checkpoint vs \(2, 5\)"),
        (dict(fpn=8), r"fpn\.weight \(4, 2, 1, 1\) in the checkpoint vs \(8, 2, 1, 1\)"),
        (dict(head=7), r"shapes: head\.weight \(5, 4\) in the checkpoint vs \(7, 4\)"),
        (dict(depth=2), r"in the model only: blocks\.1\.bias, blocks\.1\.weight"),
    ],
)
def test_resume_with_another_defeat_model_is_refused(tmp_path, changed, match):
    _save_run(tmp_path)
    other = _Net(**changed)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ResumeError, match=match):
        _resume(tmp_path, other)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())  # nothing loaded


def test_not_strict_resume_loads_into_another_model(tmp_path):
    _save_run(tmp_path)
    plain = _Net(levels=())
    ckpt = AtomicDetectionCheckpointer(plain, str(tmp_path), strict_resume=False)
    ckpt.resume_or_load("", resume=True)
    assert torch.all(plain.body.weight == 5)


def test_restore_on_failure(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with restore_on_failure(str(path)):
            path.write_text("new")
            raise RuntimeError("refused")
    assert path.read_text() == "old"
    with restore_on_failure(str(path)):
        path.write_text("new")
    assert path.read_text() == "new"
    fresh = tmp_path / "fresh.yaml"
    with pytest.raises(RuntimeError):
        with restore_on_failure(str(fresh)):
            fresh.write_text("new")
            raise RuntimeError("refused")
    assert not fresh.exists()


# ---- end to end through train_net.py and lazy_train_net.py ----


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from defeat.demo.data import register_demo_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    register_demo_dataset(str(root), name_prefix="tiny_resume", num_train=4, num_val=2, image_size=64)
    return "tiny_resume_train"


def test_train_net_resume_refusal_and_fallback(teacher_weights, tiny_data, tmp_path):
    import lazy_train_net
    import train_net

    out = str(tmp_path / "run")
    opts = [
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        "DATASETS.TRAIN",
        f"('{tiny_data}',)",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        out,
        "SOLVER.CHECKPOINT_PERIOD",
        1,
    ]
    train_net.main(train_args(f"{CONFIGS}/tiny_defeat.yaml", *opts, "SOLVER.MAX_ITER", 2))
    config_yaml = os.path.join(out, "config.yaml")
    saved = open(config_yaml).read()
    metrics = open(os.path.join(out, "metrics.json")).read()

    # Another adapter kind: refused before any iteration, config.yaml and metrics untouched.
    with pytest.raises(
        ResumeError,
        match=r"different model.*distiller\.adapters\.p2\.weight \(48, 32, 3, 3\) "
        r"in the checkpoint vs \(48, 32, 1, 1\)",
    ):
        train_net.main(
            train_args(
                f"{CONFIGS}/tiny_defeat.yaml",
                *opts,
                "SOLVER.MAX_ITER",
                3,
                "MODEL.DEFEAT.NECK.ADAPTER",
                "conv1x1",
                resume=True,
            )
        )
    assert open(config_yaml).read() == saved and open(os.path.join(out, "metrics.json")).read() == metrics
    # The student's own widths, not only the adapters': body, FPN, box head.
    for key, value, match in (
        (
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            32,
            r"backbone\.bottom_up\.stem\.conv1\.weight \(64, 3, 7, 7\) in the checkpoint",
        ),
        (
            "MODEL.FPN.OUT_CHANNELS",
            16,
            r"backbone\.fpn_lateral2\.weight \(32, 64, 1, 1\) in the checkpoint vs \(16, 64",
        ),
        (
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            32,
            r"roi_heads\.box_head\.fc1\.weight \(64, 1568\) in the checkpoint vs \(32, 1568\)",
        ),
    ):
        with pytest.raises(ResumeError, match="different model(.|\n)*" + match):
            train_net.main(
                train_args(f"{CONFIGS}/tiny_defeat.yaml", *opts, "SOLVER.MAX_ITER", 3, key, value, resume=True)
            )
        assert open(config_yaml).read() == saved and open(os.path.join(out, "metrics.json")).read() == metrics
    # Fewer levels, through the LazyConfig twin: refused as well, config.yaml untouched.
    lazy = train_args(
        f"{CONFIGS}/tiny_defeat.py",
        f"model.teacher.weights={teacher_weights}",
        f"dataloader.train.dataset.names={tiny_data}",
        f"train.output_dir={out}",
        "model.defeat.neck.in_features=[p2,p3]",
        resume=True,
    )
    with pytest.raises(ResumeError, match=r"in the checkpoint only: distiller\.adapters\.p4\.bias"):
        lazy_train_net.main(lazy)
    assert open(config_yaml).read() == saved

    # The newest checkpoint (model_final) truncated: resume from model_0000001 and say so.
    final = os.path.join(out, "model_final.pth")
    with open(final, "r+b") as f:
        f.truncate(1000)
    train_net.main(train_args(f"{CONFIGS}/tiny_defeat.yaml", *opts, "SOLVER.MAX_ITER", 3, resume=True))
    log = open(os.path.join(out, "log.txt")).read()
    assert "Resuming from model_0000001.pth, the newest intact checkpoint: skipped the newer model_final.pth" in log
    assert "Starting training from iteration 2" in log
