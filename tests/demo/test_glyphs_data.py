"""Tests for the second generated dataset, the ``glyphs`` style, and dataset selection by name."""

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from defeat.demo import data as demo_data
from defeat.demo.data import generate_dataset, glyphs, register_demo_dataset, register_demo_dataset_if_used
from defeat.demo.data.__main__ import main as data_main
from defeat.demo.data.synthetic import CLASS_NAMES
from defeat.demo.data.writer import _config, size_range

SMALL = dict(num_train=12, num_val=4, image_size=128)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("glyphs") / "g", seed=0, style="glyphs", **SMALL)


def test_glyphs_coco_files(small):
    meta = json.loads(Path(small["meta"]).read_text())
    assert meta["style"] == "glyphs" and meta["version"] == glyphs.GLYPHS_VERSION
    coco = COCO(small["train_json"])
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(glyphs.GLYPH_CLASS_NAMES)
    assert not set(glyphs.GLYPH_CLASS_NAMES) & set(CLASS_NAMES)  # other object kinds than shapes
    per_image = [len(coco.getAnnIds(imgIds=i)) for i in coco.getImgIds()]
    assert len(per_image) == 12 and min(per_image) >= 1 and max(per_image) <= glyphs.MAX_OBJECTS
    assert 2 < sum(per_image) / len(per_image) < 5  # 1-6 objects per image, some dropped when hidden
    for a in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = a["bbox"]
        assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and a["area"] == w * h


def test_glyphs_deterministic_and_not_shapes(small, tmp_path):
    again = generate_dataset(tmp_path / "again", seed=0, style="glyphs", **SMALL)
    assert Path(again["train_json"]).read_bytes() == Path(small["train_json"]).read_bytes()
    assert (Path(again["val_images"]) / "000001.png").read_bytes() == (
        Path(small["val_images"]) / "000001.png"
    ).read_bytes()
    shapes = generate_dataset(tmp_path / "shapes", seed=0, **SMALL)
    assert (Path(shapes["train_images"]) / "000000.png").read_bytes() != (
        Path(small["train_images"]) / "000000.png"
    ).read_bytes()


def test_same_folder_switches_style_and_regenerates(tmp_path):
    root = tmp_path / "d"
    generate_dataset(root, num_train=2, num_val=1)
    assert "style" not in json.loads((root / "meta.json").read_text())  # shapes stamps stay as before styles
    generate_dataset(root, num_train=2, num_val=1, style="glyphs")
    assert json.loads((root / "meta.json").read_text())["style"] == "glyphs"
    assert json.loads((root / "annotations" / "train.json").read_text())["categories"][0]["name"] == "arrow"


def test_shapes_stamp_has_no_style_key():
    """Cached shapes datasets stay valid: their stamp is the one written before styles existed."""
    assert _config(3, 1, 128, 0, 10) == {
        "version": 3,
        "num_train": 3,
        "num_val": 1,
        "image_size": 128,
        "seed": 0,
        "num_classes": 10,
    }


def test_size_mix_and_aspect_ratios():
    sizes, aspects = {"small": 0, "medium": 0, "large": 0}, []
    for i in range(60):
        _, objs = glyphs.render_glyphs_image(np.random.default_rng([5, 0, i]), 128)
        for _, (_, _, w, h) in objs:
            sizes[size_range(w * h)] += 1
            aspects.append(w / h)
    total = sum(sizes.values())
    assert sizes["small"] > 0.25 * total and sizes["medium"] > 0.4 * total and sizes["large"] >= 1, sizes
    assert min(aspects) < 0.6 and max(aspects) > 1.7  # stretched objects, both ways


def test_glyphs_stand_upright_and_decoys_turn_freely():
    rng = np.random.default_rng(3)
    tilts = [np.rad2deg(glyphs._glyph(name, rng)[2]) for name in glyphs.GLYPH_CLASS_NAMES * 20]
    assert max(abs(t) for t in tilts) <= glyphs.MAX_TILT_DEG and np.std(tilts) > glyphs.MAX_TILT_DEG / 3
    decoy_turns = [np.rad2deg(glyphs._decoy("decoy", rng)[2]) for _ in range(50)]
    assert max(decoy_turns) > 180  # decoys at any angle, so orientation alone does not tell them apart


def test_decoys_are_painted_but_never_labelled(monkeypatch):
    monkeypatch.setattr(glyphs, "MIN_OBJECTS", 0)
    monkeypatch.setattr(glyphs, "MAX_OBJECTS", 0)
    monkeypatch.setattr(glyphs, "NUM_DECOYS", (4, 4))
    calls = []
    fill = glyphs._fill_color
    monkeypatch.setattr(glyphs, "_fill_color", lambda *a: calls.append(a) or fill(*a))
    _, objs = glyphs.render_glyphs_image(np.random.default_rng(0), 128)
    assert objs == [] and len(calls) == 4


def test_every_style_has_a_renderer_and_a_registered_prefix():
    from defeat.demo.data.writer import STYLES, _styles

    assert tuple(_styles()) == STYLES == tuple(demo_data.STYLE_PREFIXES)
    assert len(set(demo_data.STYLE_PREFIXES.values())) == len(STYLES)


def test_unknown_style_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset style 'glyph'.*shapes, glyphs"):
        generate_dataset(tmp_path / "x", num_train=1, num_val=1, style="glyph")
    with pytest.raises(ValueError, match="unknown dataset style"):
        demo_data.default_root("glyph")
    with pytest.raises(SystemExit):
        data_main(["--dataset", "glyph", "--root", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_register_by_style(small):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    prefix = f"glyphs_test_{uuid.uuid4().hex[:8]}"
    names = register_demo_dataset(root=small["root"], name_prefix=prefix, style="glyphs", seed=0, **SMALL)
    try:
        assert MetadataCatalog.get(names[0]).thing_classes == list(glyphs.GLYPH_CLASS_NAMES)
        assert len(DatasetCatalog.get(names[1])) == 4
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_train_net_registers_the_named_style_only(tmp_path, monkeypatch):
    """``defeat_glyphs_*`` in DATASETS generates and registers the glyphs data (and not shapes)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    monkeypatch.setenv(demo_data.DEMO_ROOT_ENV, str(tmp_path))
    monkeypatch.setenv("DEFEAT_DEMO_NUM_TRAIN", "3")
    monkeypatch.setenv("DEFEAT_DEMO_NUM_VAL", "2")
    for name in ("defeat_glyphs_train", "defeat_glyphs_val"):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    try:
        register_demo_dataset_if_used(["defeat_glyphs_train"])
        assert sorted(os.listdir(tmp_path)) == ["defeat_glyphs"]
        assert len(DatasetCatalog.get("defeat_glyphs_val")) == 2
        assert MetadataCatalog.get("defeat_glyphs_train").thing_classes[0] == "arrow"
    finally:
        for name in ("defeat_glyphs_train", "defeat_glyphs_val"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_cli_glyphs(tmp_path, capsys):
    data_main(["--dataset", "glyphs", "--root", str(tmp_path / "cli"), "--num-train", "2", "--num-val", "1"])
    out = capsys.readouterr().out
    assert "glyphs dataset at" in out and "defeat_glyphs_train" in out and "arrow=" in out


@pytest.mark.parametrize("global_rank, local_rank, first", [(0, 0, True), (2, 0, True), (3, 1, False)])
def test_demo_data_is_generated_by_the_first_process_of_each_machine(monkeypatch, global_rank, local_rank, first):
    """Machine 2's first process (global rank 2, local rank 0) generates before the barrier too:
    the other machine's disk does not hold the data; a second process of a machine waits."""
    from detectron2.utils import comm

    events = []
    monkeypatch.setattr(comm, "get_rank", lambda: global_rank)
    monkeypatch.setattr(comm, "get_local_rank", lambda: local_rank)
    monkeypatch.setattr(comm, "synchronize", lambda: events.append("barrier"))
    monkeypatch.setattr(demo_data, "register_demo_dataset", lambda style, **kw: events.append(style))
    register_demo_dataset_if_used(["defeat_demo_train"])
    assert events == (["shapes", "barrier", "shapes"] if first else ["barrier", "shapes"])
