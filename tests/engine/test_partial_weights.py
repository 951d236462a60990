"""A fresh start from partial weights (an ImageNet-style checkpoint with the backbone's body only)
loads the tensors it has and leaves the rest at their initialisation; ``--resume`` from a folder
whose newest checkpoint belongs to another model (tensors missing, other shapes) is refused with
an error naming that file. YAML (``DeFeatTrainer``) and LazyConfig (``build_lazy_trainer``) alike:
both start through ``defeat.engine.start.load_or_resume``."""

import os

import pytest
import torch
from detectron2.modeling import build_model
from helpers import CONFIGS, TINY, data_opts, defeat_cfg, lazy_cfg, make_cfg

from defeat.checkpoint import ResumeError

BODY = "backbone.bottom_up."


@pytest.fixture(scope="module")
def backbone_only(tmp_path_factory):
    """``(path, tensors)`` of a checkpoint holding only ``backbone.bottom_up.*`` (a tiny student's,
    seeded apart from the run's own initialisation)."""
    torch.manual_seed(7)
    state = {k: v for k, v in build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml")).state_dict().items()}
    body = {k: v.clone() for k, v in state.items() if k.startswith(BODY)}
    assert body and len(body) < len(state)
    path = tmp_path_factory.mktemp("imagenet") / "backbone_only.pth"
    torch.save({"model": body}, path)
    return str(path), body


def _before_load(monkeypatch, module):
    """Record the model's tensors just before ``module``'s ``load_or_resume`` loads the weights."""
    seen = {}
    original = module.load_or_resume

    def load_or_resume(checkpointer, *args):
        seen.update({k: v.clone() for k, v in checkpointer.model.state_dict().items()})
        return original(checkpointer, *args)

    monkeypatch.setattr(module, "load_or_resume", load_or_resume)
    return seen


def _yaml(monkeypatch, teacher_weights, out, weights, resume):
    """``(student + adapters, their tensors before the load, start iteration)`` of train_net.py's trainer."""
    from defeat.engine import trainer as module

    before = _before_load(monkeypatch, module)
    trainer = module.DeFeatTrainer(defeat_cfg(teacher_weights, *data_opts(out), "MODEL.WEIGHTS", weights))
    trainer.resume_or_load(resume=resume)
    return trainer.model, before, trainer.start_iter


def _lazy(monkeypatch, teacher_weights, out, weights, resume):
    """The same for lazy_train_net.py's trainer (``train.init_checkpoint``)."""
    from defeat.engine import lazy_trainer as module

    cfg = lazy_cfg(
        f"{CONFIGS}/tiny_defeat.py",
        f"model.teacher.weights={teacher_weights}",
        f"dataloader.train.dataset.names={TINY[0]}",
        f"train.output_dir={out}",
        f"train.init_checkpoint={weights}",
    )
    before = _before_load(monkeypatch, module)
    trainer, start_iter = module.build_lazy_trainer(cfg, resume, test=lambda model: {})
    return trainer.model, before, start_iter


START = {"yaml": _yaml, "lazy": _lazy}


@pytest.mark.parametrize("kind", sorted(START))
@pytest.mark.parametrize("resume", [False, True])  # --resume in a folder without a checkpoint: a fresh start too
def test_a_fresh_start_loads_partial_weights(
    monkeypatch, tiny_dataset, teacher_weights, backbone_only, tmp_path, kind, resume
):
    path, body = backbone_only
    model, before, start_iter = START[kind](monkeypatch, teacher_weights, str(tmp_path / "run"), path, resume)
    state = model.state_dict()
    assert start_iter == 0
    assert all(torch.equal(state[k], v) for k, v in body.items())  # the file's tensors, all of them
    convs = [k for k, v in body.items() if v.dim() == 4]
    assert convs and not any(torch.equal(before[k], body[k]) for k in convs)  # they replaced the initialisation
    rest = [k for k in state if not k.startswith(BODY)]
    assert rest and all(torch.equal(state[k], before[k]) for k in rest)  # FPN, RPN, heads, adapters as built


def _other_models_checkpoint(folder, state):
    os.makedirs(folder, exist_ok=True)
    torch.save({"model": state, "iteration": 4}, os.path.join(folder, "model_0000004.pth"))
    with open(os.path.join(folder, "last_checkpoint"), "w") as f:
        f.write("model_0000004.pth")
    return os.path.join(folder, "model_0000004.pth")


@pytest.mark.parametrize("kind", sorted(START))
def test_resume_from_another_models_checkpoint_is_refused_naming_the_file(
    monkeypatch, tiny_dataset, teacher_weights, backbone_only, tmp_path, kind
):
    path, body = backbone_only
    # The same partial tensors as the newest checkpoint of the run folder: tensors missing.
    run = str(tmp_path / "partial")
    saved = _other_models_checkpoint(run, body)
    with pytest.raises(ResumeError) as e:
        START[kind](monkeypatch, teacher_weights, run, "", True)
    message = str(e.value)
    assert f"--resume: the checkpoint {saved} was written by a different model" in message
    assert "in the model only: backbone.fpn_" in message and "new output folder" in message
    # A plain student of another FPN width: other shapes (and no adapters).
    torch.manual_seed(0)
    other = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml", "MODEL.FPN.OUT_CHANNELS", 16)).state_dict()
    run = str(tmp_path / "other")
    saved = _other_models_checkpoint(run, other)
    with pytest.raises(ResumeError) as e:
        START[kind](monkeypatch, teacher_weights, run, path, True)
    message = str(e.value)
    assert f"--resume: the checkpoint {saved} was written by a different model" in message
    assert "backbone.fpn_lateral2.weight (16, 64, 1, 1) in the checkpoint vs (32, 64, 1, 1)" in message
    assert "in the model only: distiller.adapters." in message
