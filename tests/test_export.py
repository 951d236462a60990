"""Student export: DeFeat training checkpoint -> plain Detectron2 checkpoint of the student."""
import importlib.util
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.utils.events import EventStorage

from conftest import CONFIGS, REPO, assert_same_detections, defeat_cfg, make_cfg, synthetic_batch
from defeat.export import student_state_dict


def _tool():
    path = os.path.join(REPO, "tools", "export_student.py")
    spec = importlib.util.spec_from_file_location("export_student_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_student_state_dict_drops_distillation_keys_only():
    t = torch.zeros(1)
    state = {"backbone.a": t, "distiller.adapters.p2.weight": t, "roi_heads.b": t, "teacher.backbone.c": t}
    assert list(student_state_dict(state)) == ["backbone.a", "roi_heads.b"]
    ddp = {"module." + k: v for k, v in state.items()}
    assert list(student_state_dict(ddp)) == ["backbone.a", "roi_heads.b"]


@pytest.fixture(scope="module")
def trained_checkpoint(teacher_weights, tmp_path_factory):
    """A DeFeatRCNN after two SGD steps, saved like a training run (optimizer, iteration)."""
    torch.manual_seed(0)
    # The random teacher's features are large: small neck weights keep the student finite.
    model = build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.OBJ_WEIGHT", 1e-4,
                                   "MODEL.DEFEAT.NECK.BG_WEIGHT", 1e-4)).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for it in range(2):
        with EventStorage(it):
            losses = model(synthetic_batch(seed=it))
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    out = tmp_path_factory.mktemp("defeat_run")
    DetectionCheckpointer(model, str(out), optimizer=opt).save("model_final", iteration=2)
    return model.eval(), str(out / "model_final.pth")


def test_export_round_trip_into_plain_student(trained_checkpoint, tmp_path):
    model, ckpt = trained_checkpoint
    raw = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert {"optimizer", "iteration"} <= set(raw) and any(k.startswith("distiller.") for k in raw["model"])

    out = str(tmp_path / "student.pth")
    assert _tool().main([ckpt, out, "--verify-config", f"{CONFIGS}/tiny_base.yaml"]) == 0
    exported = torch.load(out, map_location="cpu", weights_only=False)
    assert set(exported) == {"model"}
    assert not any(k.startswith(("distiller.", "teacher.")) for k in exported["model"])

    plain = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml"))
    assert type(plain) is GeneralizedRCNN
    assert set(exported["model"]) == set(plain.state_dict())  # no missing, no unexpected keys
    DetectionCheckpointer(plain).load(out)
    plain.eval()
    for m in (model, plain):  # untrained: keep low-score detections so there is something to compare
        m.roi_heads.box_predictor.test_score_thresh = 0.0
    batch = [{"image": x["image"], "height": 64, "width": 64} for x in synthetic_batch(seed=7)]
    with torch.no_grad():
        expected, got = model(batch), plain(batch)
    assert sum(len(x["instances"]) for x in expected) > 0
    assert_same_detections(expected, got)


def test_verify_rejects_a_state_that_does_not_fit(trained_checkpoint):
    model, _ = trained_checkpoint
    tool = _tool()
    with pytest.raises(SystemExit, match="unexpected.*distiller"):
        tool.verify(f"{CONFIGS}/tiny_base.yaml", model.state_dict())  # adapters not stripped
    with pytest.raises(SystemExit, match="does not fit"):  # wider FPN: shape mismatch
        tool.verify(f"{CONFIGS}/tiny_teacher.yaml", student_state_dict(model.state_dict()))
