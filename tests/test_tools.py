"""tools/visualize_masks.py and tools/plot_losses.py write the figures they promise."""
import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import CONFIGS, REPO
from defeat.plots import loss_figure, read_metrics, series
from defeat.visualize import TITLE_HEIGHT, mask_panel, upsample_cells


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- visualize_masks ------------------------------------------------------------------------

def test_upsample_cells_covers_stride_blocks_and_crops():
    cells = np.array([[1, 0], [0, 1]], dtype=np.float32)
    up = upsample_cells(cells, 4, 6, 7)  # the map covers 8x8 px: cropped to 6x7
    assert up.shape == (6, 7)
    assert up[:4, :4].all() and not up[:4, 4:].any() and up[4:, 4:].all() and not up[4:, :4].any()
    assert upsample_cells(cells, 2, 5, 5).shape == (5, 5)  # smaller than the image: zero padded


def test_mask_panel_tints_object_cells_and_dims_background():
    image = np.full((8, 8, 3), 200, dtype=np.uint8)
    mask = np.zeros((2, 2), dtype=np.float32)
    mask[0, 1] = 1
    out = mask_panel(image, mask, stride=4).astype(int)
    obj, bg = out[1, 5], out[5, 1]
    assert obj[1] > obj[0] and obj[1] > obj[2]  # green dominates on object cells (BGR)
    assert (bg < 200).all() and bg[0] == bg[1] == bg[2]  # background only dimmed


# Boxes (XYXY, 64 px grey image) on known levels of tiny_defeat.yaml (SCALE_BASE 8, P2-P6).
KNOWN_BOXES = {"p2": [2, 2, 12, 12], "p3": [30, 4, 50, 24], "p5": [0, 0, 64, 64]}


@pytest.fixture(scope="module")
def known_images(tmp_path_factory):
    """A registered one-image dataset: uniform grey, three boxes on levels p2, p3 and p5."""
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    path = str(tmp_path_factory.mktemp("vis") / "grey.png")
    cv2.imwrite(path, np.full((64, 64, 3), 128, dtype=np.uint8))
    anns = [{"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0} for b in KNOWN_BOXES.values()]
    record = {"file_name": path, "height": 64, "width": 64, "image_id": 0, "annotations": anns}
    if "tiny_vis_known" not in DatasetCatalog.list():
        DatasetCatalog.register("tiny_vis_known", lambda: [dict(record)])
    return "tiny_vis_known"


def _green_pixels(panel):
    b, g, r = (panel[..., i].astype(int) for i in range(3))
    return int(((g - r > 40) & (g - b > 40)).sum())


def test_visualize_masks_draws_the_distillers_masks_per_level(known_images, tmp_path):
    from defeat.masks import gt_masks

    written = _tool("visualize_masks").main([
        "--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", known_images,
        "--panel-size", "96", "--output", str(tmp_path)])
    assert len(written) == 1 and written[0].endswith("grey_masks.png")
    img = cv2.imread(written[0])
    assert img is not None and img.shape == (96 + TITLE_HEIGHT, 6 * 96, 3)  # image + p2..p6
    masks = gt_masks([torch.tensor(list(KNOWN_BOXES.values()), dtype=torch.float32)],
                     [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)], [4, 8, 16, 32, 64], "scale", 8.0)
    assert [bool(m.any()) for m in masks] == [True, True, False, True, False]
    assert _green_pixels(img[TITLE_HEIGHT:, :96]) == 0  # the image panel has no mask
    for i, m in enumerate(masks):
        green = _green_pixels(img[TITLE_HEIGHT:, (i + 1) * 96:(i + 2) * 96])
        area = float(m.sum()) * (96 / 64 * 4 * 2 ** i) ** 2  # object cells in panel pixels
        assert 0.6 * area <= green <= area, (i, green, area)  # minus the box outlines drawn on top


def test_visualize_masks_teacher_diff_adds_a_heat_map_row(known_images, teacher_weights, tmp_path):
    written = _tool("visualize_masks").main([
        "--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", known_images,
        "--panel-size", "64", "--output", str(tmp_path), "--teacher-diff",
        "MODEL.DEFEAT.TEACHER.WEIGHTS", teacher_weights])
    img = cv2.imread(written[0])
    assert img.shape == (2 * (64 + TITLE_HEIGHT), 6 * 64, 3)
    heat = img[64 + 2 * TITLE_HEIGHT:, 64:]
    assert heat.reshape(-1, 3).std(0).max() > 10  # the heat maps are not flat


# ---- plot_losses ----------------------------------------------------------------------------

def _synthetic_metrics(path, iters=100):
    with open(path, "w") as f:
        for it in range(9, iters, 10):
            row = {"iteration": it, "loss_cls": 1.0 - it / iters, "loss_box_reg": 0.5,
                   "loss_defeat_neck_obj": 0.2 + it / iters, "loss_defeat_neck_bg": 2.0,
                   "loss_defeat_head_obj": 0.1, "loss_defeat_head_bg": 0.05 + 0.1 * it / iters,
                   "defeat/kd_weight": min(1.0, (it + 1) / 50), "lr": 0.01}
            f.write(json.dumps(row) + "\n")
        f.write(json.dumps({"iteration": iters, "bbox/AP": 12.0}) + "\n")
        f.write('{"iteration": 100, "loss_cls"')  # a run killed mid-write


def test_read_metrics_and_series(tmp_path):
    path = tmp_path / "metrics.json"
    _synthetic_metrics(path)
    rows = read_metrics(str(path))
    assert len(rows) == 11
    its, vals = series(rows + [{"iteration": 9, "loss_cls": 7.0}], "loss_cls")  # a resumed run
    assert its.tolist() == list(range(9, 100, 10)) and vals[0] == 7.0
    assert series(rows, "bbox/AP")[0].tolist() == [100]


def _overlap(a, b):
    """Whether two matplotlib display-space boxes overlap."""
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_loss_figure_panels_curves_and_legends(tmp_path):
    metrics = tmp_path / "metrics.json"
    _synthetic_metrics(metrics)
    rows = read_metrics(str(metrics))
    fig = loss_figure(rows, 800, 600)
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_lines()]
    expected = [["loss_box_reg", "loss_cls"], ["loss_defeat_neck_bg", "loss_defeat_neck_obj"],
                ["loss_defeat_head_bg", "loss_defeat_head_obj"], ["defeat/kd_weight"]]
    assert len(axes) == 4
    its = list(range(9, 100, 10))
    for ax, keys in zip(axes, expected):
        lines = ax.get_lines()
        assert [ln.get_label().split(" ")[0] for ln in lines] == keys
        for ln, key in zip(lines, keys):  # the data drawn is the metrics' values, independently read
            values = [json.loads(x)[key] for x in open(metrics).readlines()[:10]]
            assert ln.get_xdata().tolist() == its and np.allclose(ln.get_ydata(), values)
            assert ln.get_label().endswith(f"({values[-1]:.3g})")  # legend gives the last value
        legend = ax.get_legend()
        assert legend is not None and len(legend.get_texts()) == len(keys)
        box, plot = legend.get_window_extent(), ax.get_window_extent()
        assert not _overlap(box, plot), "the legend covers the plot area"
        assert box.x1 <= fig.bbox.x1 + 1 and box.y0 >= fig.bbox.y0 - 1  # and stays inside the figure
        assert ax.get_xlim()[0] == 0
    assert axes[-1].get_ylim() == (0.0, 1.05) and axes[-1].get_xlabel() == "iteration"


def test_plot_losses_writes_an_image_of_the_requested_size(tmp_path):
    metrics = tmp_path / "metrics.json"
    _synthetic_metrics(metrics)
    out = tmp_path / "plots" / "losses.png"
    assert _tool("plot_losses").main([str(metrics), "--output", str(out), "--width", "640", "--height", "480"]) == str(out)
    img = cv2.imread(str(out))
    assert img is not None and img.shape == (480, 640, 3)
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 20  # curves, text and grid, not a blank page
    pdf = tmp_path / "losses.pdf"
    _tool("plot_losses").main([str(metrics), "--output", str(pdf)])
    assert pdf.read_bytes().startswith(b"%PDF")


def test_loss_figure_skips_panels_without_data():
    rows = [{"iteration": i, "loss_cls": 1.0 / (i + 1)} for i in range(5)]  # a run without DeFeat
    fig = loss_figure(rows, 300, 200)
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["student losses"]
    with pytest.raises(ValueError, match="no training rows"):
        loss_figure([{"iteration": 1, "bbox/AP": 3.0}], 300, 200)
    with pytest.raises(ValueError, match="at least 300x200 pixels"):
        loss_figure(rows, 0, 200)


def _usage_error(capsys, tool, argv):
    """The one-line message of an argument error (argparse exits with 2 after the usage line)."""
    with pytest.raises(SystemExit) as e:
        _tool(tool).main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage:") and len(err) <= 3
    return err[-1]


def test_plot_losses_argument_errors(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    _synthetic_metrics(metrics)
    m = str(metrics)
    assert "metrics file not found" in _usage_error(capsys, "plot_losses", [str(tmp_path / "nope.json")])
    assert "at least 300x200 pixels" in _usage_error(capsys, "plot_losses", [m, "--width", "0"])
    assert "at least 300x200 pixels" in _usage_error(capsys, "plot_losses", [m, "--height", "-5"])
    for out in ("losses", "losses.txt", "losses.bmp"):
        assert "extension must be one of png" in _usage_error(
            capsys, "plot_losses", [m, "--output", str(tmp_path / out)])
    (tmp_path / "d.png").mkdir()
    assert "is a folder" in _usage_error(capsys, "plot_losses", [m, "--output", str(tmp_path / "d.png")])
    before = metrics.read_text()
    link = tmp_path / "metrics.png"
    os.symlink(metrics, link)
    assert "is the metrics file" in _usage_error(capsys, "plot_losses", [m, "--output", str(link)])
    assert metrics.read_text() == before
    assert not any(p.suffix in (".png", ".txt", ".bmp") and p.is_file() and not p.is_symlink()
                   for p in tmp_path.iterdir())


def test_plot_losses_metrics_without_losses_is_an_error(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"iteration": 10, "bbox/AP": 3.0}) + "\n")
    with pytest.raises(SystemExit, match="no training rows with losses"):
        _tool("plot_losses").main([str(metrics), "--output", str(tmp_path / "l.png")])
    assert not (tmp_path / "l.png").exists()


def test_visualize_masks_teacher_diff_needs_a_defeat_config(known_images, tmp_path):
    with pytest.raises(SystemExit, match="needs a DeFeat config"):
        _tool("visualize_masks").main(["--config-file", f"{CONFIGS}/tiny_base.yaml", "--dataset", known_images,
                                       "--output", str(tmp_path), "--teacher-diff"])


def test_visualize_masks_teacher_diff_for_retinanet(known_images, tmp_path):
    """DeFeatRetinaNet: its own levels (P3-P7) and its teacher's features."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from conftest import make_cfg

    torch.manual_seed(0)
    teacher = build_model(make_cfg(f"{CONFIGS}/tiny_retinanet_teacher.yaml"))
    DetectionCheckpointer(teacher, str(tmp_path)).save("teacher")
    written = _tool("visualize_masks").main([
        "--config-file", f"{CONFIGS}/tiny_retinanet_defeat.yaml", "--dataset", known_images,
        "--panel-size", "64", "--output", str(tmp_path / "vis"), "--teacher-diff",
        "MODEL.DEFEAT.TEACHER.WEIGHTS", str(tmp_path / "teacher.pth")])
    img = cv2.imread(written[0])
    assert img.shape == (2 * (64 + TITLE_HEIGHT), 6 * 64, 3)  # image + p3..p7, masks and differences
