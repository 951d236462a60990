"""tools/visualize_masks.py and tools/plot_losses.py write the figures they promise."""

import importlib.util
import json
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import CONFIGS, REPO

from defeat.analysis.loss_figures import balance_series, loss_figure, read_metrics, series
from defeat.analysis.mask_figures import mask_panel, upsample_cells
from defeat.engine.kd_balance import KD_DOMINANCE_RATIO


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
    r, g, b = (panel[..., i].astype(int) for i in range(3))
    return int(((g - r > 40) & (g - b > 40)).sum())


def _rectangles(ax, colour):
    """XYXY of the box outlines drawn in ``colour`` on ``ax``."""
    from matplotlib.colors import to_rgb

    return sorted(
        [round(p.get_x()), round(p.get_y()), round(p.get_x() + p.get_width()), round(p.get_y() + p.get_height())]
        for p in ax.patches
        if to_rgb(p.get_edgecolor()) == colour
    )


def _known_record(name):
    from detectron2.data import DatasetCatalog

    return DatasetCatalog.get(name)[0]


def _viewer(config_file, *opts, **kwargs):
    from defeat.config.files import load_config

    return _tool("visualize_masks").MaskViewer(load_config(config_file, opts), **kwargs)


def test_visualize_masks_draws_the_distillers_masks_per_level(known_images, tmp_path):
    from defeat.analysis.mask_figures import BOX_COLOR, OTHER_BOX_COLOR
    from defeat.modeling.masks import gt_masks

    written = _tool("visualize_masks").main(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.yaml",
            "--dataset",
            known_images,
            "--panel-size",
            "96",
            "--output",
            str(tmp_path),
        ]
    )
    assert len(written) == 1 and written[0].endswith("grey_masks.png")
    png = cv2.imread(written[0])
    assert png is not None and 5 * 96 <= png.shape[1] <= 7 * 96 and 96 <= png.shape[0] <= 2 * 96

    fig = _viewer(f"{CONFIGS}/tiny_defeat.yaml").render(_known_record(known_images), 96)
    axes = fig.axes
    assert len(axes) == 6  # image + p2..p6, no colour bar without --teacher-diff
    masks = gt_masks(
        [torch.tensor(list(KNOWN_BOXES.values()), dtype=torch.float32)],
        [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
        [4, 8, 16, 32, 64],
        "scale",
        8.0,
    )
    assert [bool(m.any()) for m in masks] == [True, True, False, True, False]
    assert _green_pixels(axes[0].get_images()[0].get_array()) == 0  # the image panel has no mask
    assert len(_rectangles(axes[0], BOX_COLOR)) == 3
    for i, (m, ax) in enumerate(zip(masks, axes[1:])):
        panel = np.asarray(ax.get_images()[0].get_array())
        assert panel.shape == (64, 64, 3)  # the padded frame, one pixel per image pixel
        cell = 4 * 2**i
        area = sum(min(cell, 64 - y * cell) * min(cell, 64 - x * cell) for y, x in torch.nonzero(m[0]).tolist())
        assert _green_pixels(panel) == area, (i, _green_pixels(panel), area)
        level = f"p{i + 2}"
        on = [KNOWN_BOXES[level]] if level in KNOWN_BOXES else []
        assert _rectangles(ax, BOX_COLOR) == on  # yellow: the boxes of this level
        assert len(_rectangles(ax, OTHER_BOX_COLOR)) == 3 - len(on)  # grey: the others


def _save_defeat_checkpoint(cfg_file, path, *opts):
    """A complete DeFeat student checkpoint (student + adapters), as a training run saves it."""
    from detectron2.checkpoint import DetectionCheckpointer

    from defeat.config.files import build_model_from_config, load_config

    torch.manual_seed(1)
    model = build_model_from_config(load_config(cfg_file, opts))
    DetectionCheckpointer(model, str(path.parent)).save(path.stem)
    return model


def test_visualize_masks_teacher_diff_heat_maps_share_one_colour_scale(known_images, teacher_weights, tmp_path):
    ckpt = tmp_path / "defeat_final.pth"
    _save_defeat_checkpoint(f"{CONFIGS}/tiny_defeat.yaml", ckpt, "MODEL.DEFEAT.TEACHER.WEIGHTS", teacher_weights)
    written = _tool("visualize_masks").main(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.yaml",
            "--dataset",
            known_images,
            "--panel-size",
            "64",
            "--output",
            str(tmp_path / "vis"),
            "--teacher-diff",
            "--weights",
            str(ckpt),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            teacher_weights,
        ]
    )
    assert written[0].endswith("grey_masks_diff.png") and cv2.imread(written[0]) is not None

    viewer = _viewer(
        f"{CONFIGS}/tiny_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
        teacher_diff=True,
        weights=str(ckpt),
    )
    fig = viewer.render(_known_record(known_images), 64)
    heat = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len(heat) == 5  # p2..p6
    arrays = [np.asarray(im.get_array()) for im in heat]
    assert [a.shape for a in arrays] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # one value per cell
    assert all(im.norm is heat[0].norm for im in heat)  # one shared scale ...
    assert heat[0].norm.vmin == 0 and np.isclose(heat[0].norm.vmax, max(a.max() for a in arrays))
    assert sum(im.colorbar is not None for im in heat) == 1  # ... with one colour bar
    assert arrays[0].std() > 0  # not flat

    # the same numbers, computed independently from the model
    model = viewer.model
    d = viewer.mapper(_known_record(known_images))
    with torch.no_grad():
        images = model.preprocess_image([d])
        s = model.backbone(images.tensor)
        t = model.teacher_features([d], images)[1]
        expected = (model.distiller.adapters["p3"](s["p3"]) - t["p3"]).pow(2).mean(1)[0].numpy()
    assert np.allclose(arrays[1], expected, rtol=1e-5, atol=1e-7)


def test_visualize_masks_refuses_missing_or_partial_student_weights(known_images, teacher_weights, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from helpers import make_cfg

    args = [
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        "--dataset",
        known_images,
        "--panel-size",
        "64",
        "--output",
        str(tmp_path / "vis"),
        "--teacher-diff",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        teacher_weights,
    ]
    tool = _tool("visualize_masks")
    with pytest.raises(SystemExit, match="needs the DeFeat student's trained weights.*--allow-random-weights"):
        tool.main(args)
    with pytest.raises(SystemExit, match="student weights not found"):
        tool.main(args + ["--weights", str(tmp_path / "nope.pth")])
    plain = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml"))  # a student without adapters
    DetectionCheckpointer(plain, str(tmp_path)).save("plain")
    with pytest.raises(SystemExit, match=r"do not fit DeFeatRCNN .*10 tensors missing .*distiller\.adapters"):
        tool.main(args + ["--weights", str(tmp_path / "plain.pth")])
    assert not (tmp_path / "vis").exists() or not os.listdir(tmp_path / "vis")  # nothing was drawn
    written = tool.main(args + ["--weights", str(tmp_path / "plain.pth"), "--allow-random-weights"])
    assert len(written) == 1
    assert len(tool.main(args + ["--allow-random-weights", "--overwrite"])) == 1


def test_visualize_masks_reads_lazy_configs(known_images, teacher_weights, tmp_path):
    """The LazyConfig twins draw the same masks as their YAML configs; --teacher-diff builds the
    LazyConfig's model (teacher from model.teacher)."""
    record = _known_record(known_images)
    for lazy, yaml in (
        (f"{CONFIGS}/tiny_defeat.py", f"{CONFIGS}/tiny_defeat.yaml"),
        ("configs/lazy/demo_defeat_slimR18_from_R18.py", "configs/demo/defeat_slimR18_from_R18.yaml"),
    ):
        a = [np.asarray(ax.get_images()[0].get_array()) for ax in _viewer(lazy).render(record, 64).axes]
        b = [np.asarray(ax.get_images()[0].get_array()) for ax in _viewer(yaml).render(record, 64).axes]
        assert len(a) == len(b) == 6 and all(np.array_equal(x, y) for x, y in zip(a, b)), lazy
    written = _tool("visualize_masks").main(
        [
            "--config-file",
            "configs/lazy/demo_defeat_slimR18_from_R18.py",
            "--dataset",
            known_images,
            "--panel-size",
            "64",
            "--output",
            str(tmp_path),
        ]
    )
    assert cv2.imread(written[0]) is not None
    written = _tool("visualize_masks").main(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.py",
            "--dataset",
            known_images,
            "--panel-size",
            "64",
            "--output",
            str(tmp_path / "diff"),
            "--teacher-diff",
            "--allow-random-weights",
            f"model.teacher.weights={teacher_weights}",
        ]
    )
    assert written[0].endswith("_masks_diff.png") and cv2.imread(written[0]) is not None


@pytest.fixture(scope="module")
def four_images(known_images):
    from detectron2.data import DatasetCatalog

    if "tiny_vis_four" not in DatasetCatalog.list():
        record = _known_record(known_images)
        DatasetCatalog.register("tiny_vis_four", lambda: [dict(record, image_id=i) for i in range(4)])
    return "tiny_vis_four"


def test_visualize_masks_argument_errors(four_images, tmp_path, capsys):
    base = ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", four_images, "--output", str(tmp_path / "o")]
    err = lambda *extra: _usage_error(capsys, "visualize_masks", base + list(extra))  # noqa: E731
    assert "--start 100 is past the end of dataset 'tiny_vis_four' (4 images)" in err("--start", "100")
    assert "--start -1 must be >= 0" in err("--start", "-1")
    assert "--num-images -1 must be at least 1" in err("--num-images", "-1")
    assert "--num-images 0 must be at least 1" in err("--num-images", "0")
    assert "--panel-size 0 must be at least 32" in err("--panel-size", "0")
    assert "--weights is only used with --teacher-diff" in err("--weights", "x.pth")
    assert "is not registered" in err("--dataset", "no_such_dataset")
    assert "config file not found: 'nope.yaml'" in _usage_error(
        capsys, "visualize_masks", ["--config-file", "nope.yaml", "--dataset", four_images]
    )
    assert "cannot apply overrides" in err("MODEL.NO_SUCH_KEY", "1")
    no_train = tmp_path / "no_train.yaml"
    no_train.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nDATASETS:\n  TRAIN: ()\n')
    assert "names no training dataset; pass --dataset NAME" in _usage_error(
        capsys, "visualize_masks", ["--config-file", str(no_train)]
    )
    (tmp_path / "file").write_text("x")
    assert "is a file" in _usage_error(capsys, "visualize_masks", base[:4] + ["--output", str(tmp_path / "file")])
    assert not (tmp_path / "o").exists()


def test_visualize_masks_draws_every_image_it_is_asked_for(four_images, tmp_path):
    tool = _tool("visualize_masks")
    base = ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", four_images, "--panel-size", "32"]
    assert len(tool.main(base + ["--num-images", "4", "--output", str(tmp_path / "a")])) == 4
    assert len(tool.main(base + ["--start", "3", "--output", str(tmp_path / "b")])) == 1  # what is left


def test_visualize_masks_never_overwrites_a_dataset_image(tmp_path):
    """photo.png's figure would be photo_masks.png, which is another image of the dataset."""
    from detectron2.data import DatasetCatalog

    records = []
    for i, name in enumerate(("photo.png", "photo_masks.png")):
        cv2.imwrite(str(tmp_path / name), np.full((64, 64, 3), 90, dtype=np.uint8))
        records.append(
            {
                "file_name": str(tmp_path / name),
                "height": 64,
                "width": 64,
                "image_id": i,
                "annotations": [{"bbox": [2, 2, 30, 30], "bbox_mode": 0, "category_id": 0}],
            }
        )
    if "tiny_vis_clash" not in DatasetCatalog.list():
        DatasetCatalog.register("tiny_vis_clash", lambda: [dict(r) for r in records])
    before = (tmp_path / "photo_masks.png").read_bytes()
    with pytest.raises(SystemExit, match=r"photo_masks.png' is the image .* of dataset 'tiny_vis_clash'"):
        _tool("visualize_masks").main(
            ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "tiny_vis_clash", "--output", str(tmp_path)]
        )
    assert (tmp_path / "photo_masks.png").read_bytes() == before


# ---- plot_losses ----------------------------------------------------------------------------


def _synthetic_metrics(path, iters=100):
    with open(path, "w") as f:
        for it in range(9, iters, 10):
            row = {
                "iteration": it,
                "loss_cls": 1.0 - it / iters,
                "loss_box_reg": 0.5,
                "loss_defeat_neck_obj": 0.2 + it / iters,
                "loss_defeat_neck_bg": 2.0,
                "loss_defeat_head_obj": 0.1,
                "loss_defeat_head_bg": 0.05 + 0.1 * it / iters,
                "defeat/kd_weight": min(1.0, (it + 1) / 50),
                "lr": 0.01,
            }
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
    fig = loss_figure(rows, 800, 700)
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_lines()]
    balance = "KD sum / detection sum"
    expected = [
        ["loss_box_reg", "loss_cls"],
        ["loss_defeat_neck_bg", "loss_defeat_neck_obj"],
        ["loss_defeat_head_bg", "loss_defeat_head_obj"],
        [balance],
        ["defeat/kd_weight"],
    ]
    assert len(axes) == 5
    its = list(range(9, 100, 10))
    training = [json.loads(x) for x in open(metrics).readlines()[:10]]
    for ax, keys in zip(axes, expected):
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
        curves = lines[: len(keys)]
        assert [ln.get_label().rsplit(" (", 1)[0] for ln in curves] == keys
        for ln, key in zip(curves, keys):  # the data drawn is the metrics' values, independently read
            if key == balance:  # the KD terms' sum over the detection terms' sum, row by row
                values = [
                    sum(v for k, v in r.items() if k.startswith("loss_defeat_"))
                    / sum(v for k, v in r.items() if k in ("loss_cls", "loss_box_reg"))
                    for r in training
                ]
            else:
                values = [r[key] for r in training]
            assert ln.get_xdata().tolist() == its and np.allclose(ln.get_ydata(), values)
            assert ln.get_label().endswith(f"({values[-1]:.3g})")  # legend gives the last value
        legend = ax.get_legend()
        assert legend is not None and len(legend.get_texts()) == len(lines)
        box, plot = legend.get_window_extent(), ax.get_window_extent()
        assert not _overlap(box, plot), "the legend covers the plot area"
        assert box.x1 <= fig.bbox.x1 + 1 and box.y0 >= fig.bbox.y0 - 1  # and stays inside the figure
        assert ax.get_xlim()[0] == 0
    # The balance panel: log scale, the training log's warning threshold dashed and in the legend.
    ratio_ax = axes[3]
    threshold = [ln for ln in ratio_ax.get_lines() if ln.get_linestyle() == "--"]
    assert ratio_ax.get_yscale() == "log" and len(threshold) == 1
    assert set(threshold[0].get_ydata()) == {KD_DOMINANCE_RATIO} and "above 10x" in threshold[0].get_label()
    low, high = ratio_ax.get_ylim()
    assert low < 1.0 and high > KD_DOMINANCE_RATIO
    assert axes[-1].get_ylim() == (0.0, 1.05) and axes[-1].get_xlabel() == "iteration"


def test_balance_series_from_rows_with_both_kinds_of_losses():
    rows = [
        {"iteration": 0, "loss_cls": 2.0, "loss_defeat_neck_bg": 30.0, "loss_defeat_neck_obj": 10.0},
        {"iteration": 1, "loss_cls": 1.0},  # no KD terms: not a point
        {"iteration": 2, "loss_defeat_neck_bg": 3.0},  # no detection terms: no ratio
        {"iteration": 3, "loss_cls": 0.5, "loss_box_reg": 0.5, "loss_defeat_neck_bg": 2.0, "total_loss": 9.0},
        {"iteration": 3, "loss_cls": 1.0, "loss_defeat_neck_bg": 4.0},  # a resumed run: the later row wins
    ]
    its, ratios = balance_series(rows)
    assert its.tolist() == [0, 3] and ratios.tolist() == [20.0, 4.0]


def test_plot_losses_writes_an_image_of_the_requested_size(tmp_path):
    metrics = tmp_path / "metrics.json"
    _synthetic_metrics(metrics)
    out = tmp_path / "plots" / "losses.png"
    argv = [str(metrics), "--output", str(out), "--width", "640", "--height", "480"]
    assert _tool("plot_losses").main(argv) == str(out)
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
    """The message of an argument error: one line on stderr, exit status 2."""
    with pytest.raises(SystemExit) as e:
        _tool(tool).main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("(--help for usage)"), err
    return err[0]


def test_plot_losses_argument_errors(tmp_path, capsys):
    metrics = tmp_path / "metrics.json"
    _synthetic_metrics(metrics)
    m = str(metrics)
    assert "metrics file not found" in _usage_error(capsys, "plot_losses", [str(tmp_path / "nope.json")])
    assert "at least 300x200 pixels" in _usage_error(capsys, "plot_losses", [m, "--width", "0"])
    assert "at least 300x200 pixels" in _usage_error(capsys, "plot_losses", [m, "--height", "-5"])
    for out in ("losses", "losses.txt", "losses.bmp"):
        assert "the file type must be one of png" in _usage_error(
            capsys, "plot_losses", [m, "--output", str(tmp_path / out)]
        )
    (tmp_path / "d.png").mkdir()
    assert "is a folder" in _usage_error(capsys, "plot_losses", [m, "--output", str(tmp_path / "d.png")])
    before = metrics.read_text()
    link = tmp_path / "metrics.png"
    os.symlink(metrics, link)
    assert "is the metrics file" in _usage_error(capsys, "plot_losses", [m, "--output", str(link)])
    assert metrics.read_text() == before
    assert not any(
        p.suffix in (".png", ".txt", ".bmp") and p.is_file() and not p.is_symlink() for p in tmp_path.iterdir()
    )


def test_plot_losses_metrics_without_losses_is_an_error(tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"iteration": 10, "bbox/AP": 3.0}) + "\n")
    with pytest.raises(SystemExit, match="no training rows with losses"):
        _tool("plot_losses").main([str(metrics), "--output", str(tmp_path / "l.png")])
    assert not (tmp_path / "l.png").exists()


def test_visualize_masks_teacher_diff_needs_a_defeat_config(known_images, tmp_path):
    with pytest.raises(SystemExit, match="needs a DeFeat config"):
        _tool("visualize_masks").main(
            [
                "--config-file",
                f"{CONFIGS}/tiny_base.yaml",
                "--dataset",
                known_images,
                "--output",
                str(tmp_path),
                "--teacher-diff",
            ]
        )


def test_visualize_masks_teacher_diff_for_retinanet(known_images, tmp_path):
    """DeFeatRetinaNet: its own levels (P3-P7) and its teacher's features."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from helpers import make_cfg

    torch.manual_seed(0)
    teacher = build_model(make_cfg(f"{CONFIGS}/tiny_retinanet_teacher.yaml"))
    DetectionCheckpointer(teacher, str(tmp_path)).save("teacher")
    written = _tool("visualize_masks").main(
        [
            "--config-file",
            f"{CONFIGS}/tiny_retinanet_defeat.yaml",
            "--dataset",
            known_images,
            "--panel-size",
            "64",
            "--output",
            str(tmp_path / "vis"),
            "--teacher-diff",
            "--allow-random-weights",
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            str(tmp_path / "teacher.pth"),
        ]
    )
    assert cv2.imread(written[0]) is not None
    viewer = _viewer(
        f"{CONFIGS}/tiny_retinanet_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        str(tmp_path / "teacher.pth"),
        teacher_diff=True,
        allow_random_weights=True,
    )
    fig = viewer.render(_known_record(known_images), 64)
    heat = [np.asarray(im.get_array()) for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert [a.shape for a in heat] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]  # p3..p7 on 64 px
