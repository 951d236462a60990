"""Student export: DeFeat training checkpoint -> plain Detectron2 checkpoint of the student."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import GeneralizedRCNN, build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, REPO, assert_same_detections, defeat_cfg, make_cfg, synthetic_batch

from defeat.analysis.export import student_state_dict


def _tool():
    path = os.path.join(REPO, "tools", "export_student.py")
    spec = importlib.util.spec_from_file_location("export_student_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_tool(*args):
    """tools/export_student.py in its own process, as a user runs it: (exit code, output)."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "projects"), REPO, os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "export_student.py"), *map(str, args)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout


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
    model = build_model(
        defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.OBJ_WEIGHT", 1e-4, "MODEL.DEFEAT.NECK.BG_WEIGHT", 1e-4)
    ).train()
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


@pytest.mark.heavy(seconds=20)
def test_verify_config_in_the_documented_order_rejects_wrong_widths(trained_checkpoint, tmp_path):
    """CKPT OUT --verify-config CFG (the order of the docs): the wrong widths fail, nothing is written."""
    _, ckpt = trained_checkpoint
    out = tmp_path / "student.pth"
    code, log = _run_tool(ckpt, out, "--verify-config", f"{CONFIGS}/tiny_teacher.yaml")  # FPN 48, not 32
    assert code != 0 and "export does not fit" in log and "tiny_teacher.yaml" in log, log[-2000:]
    assert not out.exists()
    assert _tool().main([ckpt, str(out), "--verify-config", f"{CONFIGS}/tiny_base.yaml"]) == 0  # the right widths
    assert out.exists()


def test_verify_config_overrides_apply_in_any_position(trained_checkpoint, tmp_path):
    _, ckpt = trained_checkpoint
    tool = _tool()
    # the override makes the right config wrong: it must reach the verify config
    with pytest.raises(SystemExit, match="does not fit"):
        tool.main(
            [
                ckpt,
                str(tmp_path / "a.pth"),
                "MODEL.FPN.OUT_CHANNELS",
                "48",
                "--verify-config",
                f"{CONFIGS}/tiny_base.yaml",
            ]
        )
    with pytest.raises(SystemExit, match="does not fit"):
        tool.main(
            [
                "--verify-config",
                f"{CONFIGS}/tiny_base.yaml",
                ckpt,
                str(tmp_path / "b.pth"),
                "MODEL.FPN.OUT_CHANNELS",
                "48",
            ]
        )
    assert not (tmp_path / "a.pth").exists() and not (tmp_path / "b.pth").exists()


def test_verify_config_reads_lazy_configs(trained_checkpoint, tmp_path):
    _, ckpt = trained_checkpoint
    tool = _tool()
    assert tool.main([ckpt, str(tmp_path / "s.pth"), "--verify-config", f"{CONFIGS}/tiny_base.py"]) == 0
    with pytest.raises(SystemExit, match="does not fit.*tiny_teacher.py"):
        tool.main([ckpt, str(tmp_path / "t.pth"), "--verify-config", f"{CONFIGS}/tiny_teacher.py"])
    with pytest.raises(SystemExit, match="does not fit"):  # a LazyConfig override reaches the model
        tool.main(
            [
                ckpt,
                str(tmp_path / "u.pth"),
                "--verify-config",
                f"{CONFIGS}/tiny_base.py",
                "model.backbone.out_channels=48",
            ]
        )
    with pytest.raises(SystemExit, match="key=value"):
        tool.main([ckpt, str(tmp_path / "v.pth"), "--verify-config", f"{CONFIGS}/tiny_base.py", "MODEL.X", "1"])


def test_verify_config_of_the_demo_lazy_student(tmp_path):
    """The demo LazyConfig student builds through the tools' loader (slim R18, FPN 64)."""
    from defeat.config.files import build_model_from_config, load_config

    model = build_model_from_config(load_config("configs/lazy/demo_student_slimR18.py"))
    ckpt = tmp_path / "demo.pth"
    torch.save({"model": model.state_dict(), "iteration": 3}, ckpt)
    out = tmp_path / "s.pth"
    assert _tool().main([str(ckpt), str(out), "--verify-config", "configs/lazy/demo_student_slimR18.py"]) == 0
    # The written file loads strictly into the config's model, tensor for tensor.
    written = torch.load(out, map_location="cpu", weights_only=False)["model"]
    fresh = build_model_from_config(load_config("configs/lazy/demo_student_slimR18.py"))
    fresh.load_state_dict(written, strict=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fresh.state_dict().items())
    # A checkpoint of that model with a tensor missing is refused by the same check.
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("roi_heads.box_predictor.")}
    torch.save({"model": partial, "iteration": 3}, tmp_path / "partial.pth")
    with pytest.raises(SystemExit, match="box_predictor"):
        _tool().main(
            [
                str(tmp_path / "partial.pth"),
                str(tmp_path / "p.pth"),
                "--verify-config",
                "configs/lazy/demo_student_slimR18.py",
            ]
        )


def test_verify_config_refuses_a_defeat_config(trained_checkpoint, tmp_path):
    _, ckpt = trained_checkpoint
    with pytest.raises(SystemExit, match="wants the plain student config.*DeFeatRCNN"):
        _tool().main([ckpt, str(tmp_path / "s.pth"), "--verify-config", f"{CONFIGS}/tiny_defeat.yaml"])


def _parse_error(capsys, argv):
    with pytest.raises(SystemExit) as e:
        _tool().main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("export_student") and "error:" in err[0], err
    return err[0]


def test_export_refuses_to_overwrite_its_input(trained_checkpoint, tmp_path, capsys):
    _, ckpt = trained_checkpoint
    before = os.path.getsize(ckpt)
    err = _parse_error(capsys, [ckpt, ckpt])
    assert "is the input checkpoint" in err
    link = tmp_path / "link.pth"
    os.symlink(ckpt, link)
    assert "is the input checkpoint" in _parse_error(capsys, [ckpt, str(link)])
    cfg = tmp_path / "student.yaml"
    cfg.write_text(f'_BASE_: "{CONFIGS}/tiny_base.yaml"\n')
    assert "is the verify config" in _parse_error(capsys, [ckpt, str(cfg), "--verify-config", str(cfg)])
    assert os.path.getsize(ckpt) == before and "tiny_base" in cfg.read_text()


def test_export_argument_errors(trained_checkpoint, tmp_path, capsys):
    _, ckpt = trained_checkpoint
    assert "checkpoint not found: 'nope.pth'" in _parse_error(capsys, ["nope.pth", str(tmp_path / "s.pth")])
    assert "is a folder" in _parse_error(capsys, [ckpt, str(tmp_path)])
    assert "--verify-config file not found" in _parse_error(
        capsys, [ckpt, str(tmp_path / "s.pth"), "--verify-config", "nope.yaml"]
    )
    assert "without --verify-config" in _parse_error(capsys, [ckpt, str(tmp_path / "s.pth"), "MODEL.X", "1"])
    assert not (tmp_path / "s.pth").exists()


def test_export_from_a_file_that_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(SystemExit) as e:  # a message (exit status 1), not a traceback
        _tool().main([str(text), str(tmp_path / "s.pth")])
    assert str(e.value.code).startswith(f"export_student.py: error: cannot read '{text}' as a PyTorch checkpoint")
    assert "\n" not in str(e.value.code) and not (tmp_path / "s.pth").exists()
    no_model = tmp_path / "weights.pth"
    torch.save({"state": {}}, no_model)
    with pytest.raises(SystemExit, match="no 'model' entry"):
        _tool().main([str(no_model), str(tmp_path / "s.pth")])
    empty = tmp_path / "empty.pth"
    torch.save({"model": {"distiller.adapters.p2.weight": torch.zeros(1)}}, empty)
    with pytest.raises(SystemExit, match="holds no student weights"):
        _tool().main([str(empty), str(tmp_path / "s.pth")])


def test_export_into_a_missing_folder_creates_it(trained_checkpoint, tmp_path):
    _, ckpt = trained_checkpoint
    out = tmp_path / "new" / "deeper" / "student.pth"
    assert _tool().main([ckpt, str(out)]) == 0
    assert set(torch.load(out, map_location="cpu", weights_only=False)) == {"model"}
