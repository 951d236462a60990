"""defeat.analysis.dataset_stats against independent computations; tools/inspect_dataset.py end to end."""

import math
import os
import re

import numpy as np
import pytest
import torch
from coco_files import load_tool, write_coco
from detectron2.structures import BoxMode
from helpers import CONFIGS

from defeat.analysis.dataset_stats import (
    COCO_LOG_SIDE,
    ResizedImage,
    coco_level_shares,
    compute_stats,
    level_shares,
    object_cell_shares,
    resize_records,
    suggest_scale_base,
)


def _rec(h, w, boxes, mode=BoxMode.XYWH_ABS, crowd=()):
    return {
        "file_name": "x.png",
        "height": h,
        "width": w,
        "annotations": [
            {"bbox": list(b), "bbox_mode": mode, "category_id": i % 2, "iscrowd": int(i in crowd)}
            for i, b in enumerate(boxes)
        ],
    }


def test_resize_like_resize_shortest_edge_and_skip_crowd_and_empty():
    # 480x640 (HxW) -> short side 800: scale 5/3, long side 1066.7 -> 1067 (< 1333).
    # 300x1200 -> 800x3200 would exceed 1333: scale 1333/1200, 333.25 -> 333.
    images, skipped = resize_records(
        [
            _rec(480, 640, [(30, 60, 60, 30), (0, 0, 0, 10), (1, 1, 5, 5)], crowd=(2,)),
            _rec(300, 1200, [(0, 0, 1200, 300)]),
        ],
        800,
        1333,
    )
    assert skipped == {"crowd": 1, "zero_area": 1}
    assert (images[0].height, images[0].width) == (800, 1067)
    sx, sy = 1067 / 640, 800 / 480
    assert torch.allclose(images[0].boxes, torch.tensor([[30 * sx, 60 * sy, 90 * sx, 90 * sy]], dtype=torch.float64))
    assert (images[1].height, images[1].width) == (333, 1333)
    assert torch.allclose(images[1].boxes, torch.tensor([[0.0, 0.0, 1333.0, 333.0]], dtype=torch.float64))
    images, _ = resize_records([_rec(50, 70, [(1, 2, 3, 4)])], 0, 0)  # MIN_SIZE_TEST 0: no resize
    assert (images[0].height, images[0].width) == (50, 70)


def _images(sides, size=1024):
    """One square box of each side per image, at the top-left corner."""
    return [
        ResizedImage(
            size, size, torch.tensor([[0.0, 0.0, s, s]], dtype=torch.float64), torch.zeros(1, dtype=torch.int64)
        )
        for s in sides
    ]


def test_level_counts_follow_floor_log2():
    sides = [10, 55.9, 56, 111.9, 112, 300, 700, 5000]
    expected = np.zeros(5, dtype=int)
    for s in sides:
        expected[min(4, max(0, math.floor(math.log2(s / 56))))] += 1
    assert level_shares(_images(sides, 6000), 5, 56.0).tolist() == expected.tolist() == [4, 1, 1, 1, 1]


def test_coco_reference_reproduces_the_published_thresholds():
    mu, sigma = COCO_LOG_SIDE
    cdf = lambda s: 0.5 * (1 + math.erf((math.log(s) - mu) / (sigma * math.sqrt(2))))  # noqa: E731
    assert cdf(32 * 800 / 480) == pytest.approx(0.41, abs=1e-4)  # 41 % small
    assert 1 - cdf(96 * 800 / 480) == pytest.approx(0.25, abs=1e-4)  # 24-25 % large
    shares = coco_level_shares(5)
    assert shares.sum() == pytest.approx(1.0)
    assert shares[0] == pytest.approx(cdf(112)) and shares[4] == pytest.approx(1 - cdf(56 * 16))
    assert list(np.round(100 * shares)) == [65, 18, 11, 5, 2]


def test_suggested_scale_base_recovers_a_rescaled_coco():
    """Boxes drawn from the COCO reference, 2x larger: the suggestion is ~2 x 56."""
    mu, sigma = COCO_LOG_SIDE
    sides = np.exp(np.random.default_rng(0).normal(mu + math.log(2), sigma, 4000))
    base, dist = suggest_scale_base(_images(np.clip(sides, 1, 20000), 40000), 5)
    assert base == pytest.approx(112, rel=0.06) and dist < 0.05
    base, _ = suggest_scale_base(_images(np.clip(sides / 2, 1, 20000), 40000), 5)
    assert base == pytest.approx(56, rel=0.06)


def test_object_cell_shares_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    images = []
    for h, w in ((70, 100), (64, 64), (33, 90)):
        k = 4
        xy = rng.uniform(0, [w - 5, h - 5], (k, 2))
        wh = rng.uniform(2, 40, (k, 2))
        b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], 1)
        images.append(ResizedImage(h, w, torch.tensor(b), torch.zeros(k, dtype=torch.int64)))
    strides, base, div = [4, 8, 16], 8.0, 16
    got = object_cell_shares(images, strides, div, "scale", base)
    inside, cells = np.zeros(3), np.zeros(3)
    for im in images:
        ph, pw = -(-im.height // div) * div, -(-im.width // div) * div
        for lvl, s in enumerate(strides):
            fh, fw = -(-ph // s), -(-pw // s)
            grid = np.zeros((fh, fw), bool)
            for x1, y1, x2, y2 in im.boxes.numpy():
                side = math.sqrt((x2 - x1) * (y2 - y1))
                if min(2, max(0, math.floor(math.log2(side / base)))) != lvl:
                    continue
                # cells [floor(x1/s), max(floor(x2/s), floor(x1/s) + 1)), clipped to the map
                c0, r0 = int(x1 // s), int(y1 // s)
                grid[r0 : max(int(y2 // s), r0 + 1), c0 : max(int(x2 // s), c0 + 1)] = True
            inside[lvl] += grid.sum()
            cells[lvl] += grid.size
    assert np.allclose(got, inside / cells)


def test_compute_stats_counts_classes_and_the_tool_writes_only_its_output(tmp_path, capsys):
    json_file, images = write_coco(
        str(tmp_path / "data"), num_images=4, boxes=lambda i: [(2, 2, 20, 10, 0), (30, 30, 30, 30, 1)]
    )
    from detectron2.data import DatasetCatalog

    from defeat.data.datasets import register_coco_dataset

    register_coco_dataset("stats_files", json_file, images)
    dicts = DatasetCatalog.get("stats_files")
    stats = compute_stats(dicts, "stats_files", ["square", "bar"], 64, 64, ["p2", "p3"], [4, 8], 32, "scale", 8.0)
    assert stats.class_counts.tolist() == [4, 4]
    assert np.allclose(np.sort(stats.sides), sorted([math.sqrt(200)] * 4 + [30.0] * 4))
    assert stats.level_counts.tolist() == [4, 4]  # sqrt(200) = 14.1 < 16 -> p2; 30 -> p3

    tool = load_tool("inspect_dataset")

    before = {p: os.path.getmtime(p) for p in [json_file] + [os.path.join(images, f) for f in os.listdir(images)]}
    out = tmp_path / "report" / "stats.png"
    tool.main(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.yaml",
            "--dataset",
            f"tool_files={json_file}:{images}",
            "--output",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert "dataset tool_files: 4 images, 8 boxes used" in text and "suggested SCALE_BASE" in text
    assert re.search(r"\n  square +4\n  bar +4\n", text) and out.stat().st_size > 10_000
    assert {p: os.path.getmtime(p) for p in before} == before
    for target in (os.path.join(images, "img_000.png"), os.path.join(images, "new.png")):
        with pytest.raises(SystemExit, match="(is|lies inside) the image folder of dataset 'tool_files'"):
            tool.main(["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "tool_files", "--output", target])
    with pytest.raises(SystemExit):  # not a figure type (and it is the annotations)
        tool.main(["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "tool_files", "--output", json_file])
    assert "file type must be one of png" in capsys.readouterr().err
    link = tmp_path / "annotations.png"
    os.symlink(json_file, link)
    with pytest.raises(SystemExit):
        tool.main(["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "tool_files", "--output", str(link)])
    assert "is the annotations of dataset 'tool_files'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the report exists: kept unless --overwrite
        tool.main(["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "tool_files", "--output", str(out)])
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    tool.main(
        ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "tool_files", "--output", str(out)]
        + ["--overwrite"]
    )


def test_inspect_refuses_levels_the_backbone_lacks(tmp_path):
    json_file, images = write_coco(str(tmp_path / "data"), num_images=1)
    with pytest.raises(SystemExit, match=r"IN_FEATURES \['p7'\] are not backbone outputs"):
        load_tool("inspect_dataset").main(
            [
                "--config-file",
                f"{CONFIGS}/tiny_defeat.yaml",
                "--dataset",
                f"levels={json_file}:{images}",
                "--output",
                str(tmp_path / "x.png"),
                "MODEL.DEFEAT.NECK.IN_FEATURES",
                "['p2', 'p7']",
            ]
        )


def test_inspect_takes_a_lazyconfig_like_its_yaml_twin(tmp_path, capsys):
    """The tiny DeFeat LazyConfig and its YAML twin give the same report on the same dataset
    (levels, strides, test-time size and SCALE_BASE read through the one loader)."""
    json_file, images = write_coco(str(tmp_path / "data"), num_images=3, seed=3)
    tool = load_tool("inspect_dataset")
    reports = []
    for config in (f"{CONFIGS}/tiny_defeat.yaml", f"{CONFIGS}/tiny_defeat.py"):
        stats = tool.main(
            [
                "--config-file",
                config,
                "--dataset",
                f"twin={json_file}:{images}",
                "--output",
                str(tmp_path / f"{config[-2:]}.png"),
            ]
        )
        reports.append((stats.level_counts.tolist(), sorted(stats.sides.tolist()), capsys.readouterr().out))
    assert reports[0][:2] == reports[1][:2] and reports[0][2] == reports[1][2].replace(
        "tiny_defeat.py", "tiny_defeat.yaml"
    ).replace("py.png", "ml.png")
    with pytest.raises(SystemExit, match=r"--config-file: override 'model.defeat.nek.bg_weight=1'"):
        tool.main(["--config-file", f"{CONFIGS}/tiny_defeat.py", "--dataset", "twin", "model.defeat.nek.bg_weight=1"])


def test_inspect_needs_a_dataset_and_a_test_time_resize(tmp_path):
    """A config that names no training set needs --dataset; a LazyConfig whose test mapper has no
    ResizeShortestEdge cannot size the boxes: both stop with a message naming what to give."""
    json_file, images = write_coco(str(tmp_path / "data"), num_images=1)
    tool = load_tool("inspect_dataset")
    with pytest.raises(SystemExit, match=r"--dataset: .*tiny_defeat.py names no training set"):
        tool.main(["--config-file", f"{CONFIGS}/tiny_defeat.py", "dataloader.train.dataset.names=[]"])
    with pytest.raises(SystemExit, match="test-time augmentations have no ResizeShortestEdge to size boxes by"):
        tool.main(
            ["--config-file", f"{CONFIGS}/tiny_defeat.py", "--dataset", f"noresize={json_file}:{images}"]
            + ["--output", str(tmp_path / "n.png"), "dataloader.test.mapper.augmentations=[]"]
        )
