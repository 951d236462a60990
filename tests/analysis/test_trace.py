"""tools/trace_student.py: an exported student traced to TorchScript (Detectron2's TracingAdapter +
torch.jit.trace) detects what the eager student detects, on an image it was not traced on."""

import json

import numpy as np
import pytest
import torch
from coco_files import load_tool
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model
from helpers import CONFIGS, make_cfg

from defeat.analysis import deploy
from defeat.analysis.export import write_student
from defeat.errors import ExportError

RCNN = f"{CONFIGS}/tiny_base.yaml"
RETINANET = f"{CONFIGS}/tiny_retinanet_base.yaml"
KEEP_ALL = {RCNN: ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"], RETINANET: ["MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{config: path}`` of a random tiny student of each family, written as export_student.py does."""
    root, out = tmp_path_factory.mktemp("exported"), {}
    for i, config in enumerate((RCNN, RETINANET)):
        torch.manual_seed(i)
        model = build_model(make_cfg(config))
        write_student(model.state_dict(), str(root / f"student{i}.pth"))
        out[config] = str(root / f"student{i}.pth")
    return out


def _eager(config, weights):
    """The student built and loaded independently of the tool (Detectron2's builder and checkpointer)."""
    model = build_model(make_cfg(config, *KEEP_ALL[config])).eval()
    DetectionCheckpointer(model).load(weights)
    return model


@pytest.mark.parametrize("config", [RCNN, RETINANET])
def test_traced_student_detects_what_the_eager_student_detects(config, exported, tmp_path, capsys):
    out = tmp_path / "student.ts"
    argv = ["--config-file", config, "--weights", exported[config], "--output", str(out), *KEEP_ALL[config]]
    result = load_tool("trace_student").main(argv)
    assert "detections agree" in capsys.readouterr().out and out.is_file()
    extra = {"defeat_trace.json": ""}
    traced = torch.jit.load(str(out), _extra_files=extra)
    info = json.loads(extra["defeat_trace.json"])
    assert info == result["info"] and info["input_format"] == "BGR" and info["outputs"][-1] == "image_size"
    # An image of a size the trace never saw: 40x64 after the test-time resize (64 px long side).
    image = torch.as_tensor(deploy.random_image(50, 80, seed=7).astype("float32").transpose(2, 0, 1))
    image = torch.nn.functional.interpolate(image[None], size=(40, 64), mode="bilinear")[0].round()
    with torch.no_grad():
        outputs = dict(zip(info["outputs"], traced(image)))
        model = _eager(config, exported[config])
        run = deploy.inference_function(model)
        expected = run(model, [{"image": image}])[0]["instances"]
    assert len(expected) > 0 and outputs["pred_boxes"].shape == (len(expected), 4)
    torch.testing.assert_close(outputs["pred_boxes"], expected.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(outputs["scores"], expected.scores, atol=1e-5, rtol=1e-4)
    assert torch.equal(outputs["pred_classes"], expected.pred_classes)
    assert outputs["image_size"].tolist() == [40, 64]


def test_differing_detections_are_refused(exported):
    """The check the tool makes before writing: a traced model whose boxes, scores or count differ."""
    model = _eager(RCNN, exported[RCNN])
    image = deploy.prepare_image(deploy.random_image(64, 64), [], "BGR")
    traced, adapter = deploy.trace(model, image)
    assert deploy.compare(model, traced, adapter, [image])[0]["box_diff"] == 0.0

    def shifted(x):
        boxes, *rest = traced(x)
        return (boxes + 1.0, *rest)

    def fewer(x):
        return tuple(t[:-1] if t.dim() and len(t) > 2 else t for t in traced(x))

    with pytest.raises(ExportError, match=r"boxes by up to 1 px"):
        deploy.compare(model, shifted, adapter, [image])
    with pytest.raises(ExportError, match=r"the traced model finds \d+ detections .* the eager model \d+"):
        deploy.compare(model, fewer, adapter, [image])


def test_bad_arguments_are_refused_before_any_work(exported, tmp_path, capsys):
    tool = load_tool("trace_student")
    existing = tmp_path / "s.ts"
    existing.write_bytes(b"x")
    cases = [
        (["--output", str(existing)], "already exists; pass --overwrite"),
        (["--output", exported[RCNN]], "is the weights"),
        (["--output", str(tmp_path)], "is a folder"),
        (["--output", str(tmp_path / "a.ts"), "--image", str(tmp_path / "none.png")], "--image not found"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as e:
            tool.main(["--config-file", RCNN, "--weights", exported[RCNN], *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err
    assert existing.read_bytes() == b"x"
    with pytest.raises(SystemExit, match="no weights: pass --weights"):
        tool.main(["--config-file", RCNN, "--output", str(tmp_path / "b.ts")])
    other = tmp_path / "other.pth"  # weights of another model: refused, nothing written
    torch.manual_seed(0)
    write_student(build_model(make_cfg(f"{CONFIGS}/tiny_teacher.yaml")).state_dict(), str(other))
    with pytest.raises(SystemExit, match="do not fit GeneralizedRCNN"):
        tool.main(["--config-file", RCNN, "--weights", str(other), "--output", str(tmp_path / "c.ts")])
    assert not (tmp_path / "b.ts").exists() and not (tmp_path / "c.ts").exists()


def test_prepare_image_resizes_and_converts_as_at_test_time():
    from detectron2.data import transforms as T

    bgr = np.zeros((30, 60, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    tensor = deploy.prepare_image(bgr, [T.ResizeShortestEdge(60, 100)], "RGB")
    assert tensor.shape == (3, 50, 100) and tensor.dtype == torch.float32  # 60 px short side, 100 px at most
    assert float(tensor[2].mean()) == 255.0 and float(tensor[0].mean()) == 0.0  # blue is the last RGB channel


def test_traced_boxes_scaled_back_by_the_recorded_resize_are_default_predictors(exported, tmp_path):
    """The traced module's boxes are in the resized input's pixels (as defeat_trace.json says);
    scaled by original / resized side they are Detectron2's ``DefaultPredictor`` boxes, on an image
    the test size shrinks and one it enlarges."""
    from detectron2.data import transforms as T
    from detectron2.engine import DefaultPredictor

    out = tmp_path / "student.ts"
    load_tool("trace_student").main(
        ["--config-file", RCNN, "--weights", exported[RCNN], "--output", str(out), *KEEP_ALL[RCNN]]
    )
    extra = {"defeat_trace.json": ""}
    traced = torch.jit.load(str(out), _extra_files=extra)
    info = json.loads(extra["defeat_trace.json"])
    assert info["boxes"] == "x1, y1, x2, y2 in the pixels of the resized input"
    resize = T.ResizeShortestEdge(64, 64)
    assert info["test_resize"] == [repr(resize)]
    cfg = make_cfg(RCNN, *KEEP_ALL[RCNN], "MODEL.WEIGHTS", exported[RCNN])
    reference = DefaultPredictor(cfg)
    for h, w in ((150, 260), (30, 44)):
        bgr = deploy.random_image(h, w, seed=w)
        image = deploy.prepare_image(bgr, [resize], "BGR")
        new_h, new_w = image.shape[1:]
        assert (new_h, new_w) != (h, w)
        with torch.no_grad():
            outputs = dict(zip(info["outputs"], traced(image)))
        assert outputs["image_size"].tolist() == [new_h, new_w]
        scale = torch.tensor([w / new_w, h / new_h, w / new_w, h / new_h])
        expected = reference(np.ascontiguousarray(bgr))["instances"]
        assert len(expected) > 0 and len(outputs["scores"]) == len(expected)
        torch.testing.assert_close(outputs["pred_boxes"] * scale, expected.pred_boxes.tensor, atol=2e-3, rtol=1e-4)


CHECKS = ("the sample", "the sample mirrored", "another aspect ratio")


@pytest.mark.parametrize("wrong", [None, *range(len(CHECKS))])
def test_each_of_the_three_checks_runs_and_refuses_a_traced_model_wrong_on_its_image(
    exported, tmp_path, monkeypatch, wrong
):
    """The tool compares the traced and the eager student on the sample, the sample mirrored and an
    image of the other aspect ratio: a traced module whose boxes are off on only one of them is
    refused (nothing written), naming that image's size."""
    import cv2
    from detectron2.data import transforms as T

    tool = load_tool("trace_student")
    sample = deploy.random_image(60, 80, seed=5)  # 60x80 (HxW) -> 48x64 at the test size
    cv2.imwrite(str(tmp_path / "sample.png"), sample)
    resize = [T.ResizeShortestEdge(64, 64)]
    expected = [
        deploy.prepare_image(sample, resize),
        deploy.prepare_image(np.ascontiguousarray(sample[:, ::-1]), resize),
    ]
    seen, real_trace = [], deploy.trace

    def trace(model, image):
        traced, adapter = real_trace(model, image)
        assert torch.equal(image, expected[0])  # traced on the sample

        def run(x):
            seen.append(x.clone())
            boxes, *rest = traced(x)
            off = wrong is not None and len(seen) == wrong + 1
            return (boxes + 5.0 if off else boxes, *rest)

        return run, adapter

    monkeypatch.setattr(deploy, "trace", trace)
    monkeypatch.setattr(torch.jit, "save", lambda module, f, _extra_files=None: f.write(b"traced"))
    out = tmp_path / "student.ts"
    argv = [
        "--config-file",
        RCNN,
        "--weights",
        exported[RCNN],
        "--output",
        str(out),
        "--image",
        str(tmp_path / "sample.png"),
    ]
    if wrong is None:
        report = tool.main([*argv, *KEEP_ALL[RCNN]])["report"]
        assert [r["size"] for r in report] == [(48, 64), (48, 64), (64, 48)] and all(r["detections"] for r in report)
        assert out.read_bytes() == b"traced"
    else:
        with pytest.raises(
            SystemExit, match=r"differ from the eager model's on a (\d+)x(\d+) image: boxes by up to 5 px"
        ) as e:
            tool.main([*argv, *KEEP_ALL[RCNN]])
        assert ("64x48" if wrong == 2 else "48x64") in str(e.value) and "nothing written" in str(e.value)
        assert not out.exists() and len(seen) == wrong + 1  # stopped at the wrong one
    # The three images compared: the sample, its mirror, and one of the other aspect ratio.
    assert torch.equal(seen[0], expected[0])
    if len(seen) > 1:
        assert torch.equal(seen[1], expected[1]) and not torch.equal(seen[1], seen[0])
    if len(seen) > 2:
        assert seen[2].shape[1:] == (64, 48)
