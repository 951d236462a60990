"""Class identity in every export: a dataset of category ids 12, 5, 9 (listed out of id order, not
1..K) is trained as classes 0, 1, 2 in id order; the exported checkpoint, defeat_trace.json and
predictions.json map those indices back to the names and ids, and so does the snippet of
docs/custom_dataset.md for the traced model."""

import json
import os
import re

import pytest
import torch
from coco_files import load_tool, write_coco
from detectron2.modeling import build_model
from helpers import CONFIGS, REPO, make_cfg

from defeat.analysis.export import write_student
from defeat.data.classes import category_ids_by_index, class_identity, identity_from_checkpoint
from defeat.data.datasets import register_coco_dataset

CONFIG = f"{CONFIGS}/tiny_base.yaml"
THREE = ["MODEL.ROI_HEADS.NUM_CLASSES", "3"]
KEEP_ALL = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
# As the json lists them; Detectron2 orders the classes by id: zebra (5), cat (9), ant (12) (neither
# the json's order nor the names' alphabetical one).
JSON_CLASSES, JSON_IDS = ("ant", "zebra", "cat"), (12, 5, 9)
NAMES, IDS = ["zebra", "cat", "ant"], [5, 9, 12]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 3-class dataset of ids 12/5/9 and a random tiny student of 3 classes: its plain weights
    and a DeFeat-style checkpoint (an adapter tensor and a trainer's iteration beside them)."""
    root = tmp_path_factory.mktemp("ids")
    json_file, images = write_coco(str(root / "data"), num_images=3, classes=JSON_CLASSES, category_ids=JSON_IDS)
    torch.manual_seed(0)
    state = build_model(make_cfg(CONFIG, *THREE)).state_dict()
    checkpoint = root / "model_final.pth"
    torch.save({"model": {**state, "distiller.adapters.p2.weight": torch.zeros(1)}, "iteration": 2}, checkpoint)
    return {"root": root, "json": json_file, "images": images, "checkpoint": str(checkpoint), "state": state}


def _spec(data, name):
    return f"{name}={data['json']}:{data['images']}"


def test_class_identity_orders_names_and_ids_by_the_models_class_index(data):
    register_coco_dataset("ids_unit", data["json"], data["images"])
    identity = class_identity("ids_unit")
    assert identity == {"dataset": "ids_unit", "names": NAMES, "category_ids": IDS}
    assert category_ids_by_index(identity) == {0: 5, 1: 9, 2: 12}
    assert class_identity("ids_nowhere") is None  # not registered, no classes
    # What a checkpoint carries is read back only when it is well-formed.
    assert identity_from_checkpoint({"model": {}, "classes": identity}) == identity
    for bad in ({"names": ["a", "b"], "category_ids": [1]}, {"names": []}, {"names": "ab"}, "ab"):
        assert identity_from_checkpoint({"classes": bad}) is None


def test_export_carries_the_names_and_ids_and_refuses_another_count(data, tmp_path, caplog):
    tool = load_tool("export_student")
    out = tmp_path / "student.pth"
    assert tool.main(["--dataset", _spec(data, "ids_export"), data["checkpoint"], str(out)]) == 0
    saved = torch.load(out, map_location="cpu", weights_only=False)
    assert saved["classes"] == {"dataset": "ids_export", "names": NAMES, "category_ids": IDS}
    assert set(saved["model"]) == set(data["state"])  # the adapters left out as before
    # classes of another count than the model's are refused: the verify config's, else the box predictor's
    wrong = tmp_path / "wrong.pth"
    two = write_coco(str(tmp_path / "two"), num_images=2)
    for argv, key in (
        (["--verify-config", CONFIG, *THREE], "MODEL.ROI_HEADS.NUM_CLASSES"),
        ([], "the checkpoint's box predictor"),
    ):
        with pytest.raises(SystemExit) as e:
            tool.main(["--dataset", f"ids_two={two[0]}:{two[1]}", data["checkpoint"], str(wrong), *argv])
        message = str(e.value.code)
        assert message.startswith("export_student.py: error: --dataset ids_two has 2 classes"), message
        assert f"but the model 3 ({key})" in message and "\n" not in message and not wrong.exists()
    # no dataset: the export has no classes, and says so
    bare = tmp_path / "bare.pth"
    assert tool.main([data["checkpoint"], str(bare)]) == 0
    assert set(torch.load(bare, map_location="cpu", weights_only=False)) == {"model"}
    assert "the export carries no class names or category ids" in caplog.text


def test_export_takes_the_verify_configs_registered_training_set(data, tmp_path, monkeypatch):
    monkeypatch.setenv("DEFEAT_COCO_DATASETS", _spec(data, "ids_env"))
    out = tmp_path / "student.pth"
    argv = [data["checkpoint"], str(out), "--verify-config", CONFIG, *THREE, "DATASETS.TRAIN", "('ids_env',)"]
    assert load_tool("export_student").main(argv) == 0
    assert torch.load(out, map_location="cpu", weights_only=False)["classes"]["category_ids"] == IDS


def _doc_snippet():
    """The Python block of docs/custom_dataset.md that maps a traced model's indices back."""
    text = open(os.path.join(REPO, "docs", "custom_dataset.md")).read()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if 'info["category_ids"]' in b]
    assert len(blocks) == 1, "the docs' snippet for the traced model"
    return blocks[0]


@pytest.mark.heavy(seconds=25)
def test_trace_and_predictions_carry_them_and_the_docs_snippet_maps_indices_back(data, tmp_path):
    from defeat.analysis import deploy

    exported = tmp_path / "student.pth"
    write_student(data["state"], str(exported), classes=class_identity_of(data, "ids_trace"))
    # The trace takes the classes from the export's weights (no dataset given here).
    ts = tmp_path / "student.ts"
    argv = ["--config-file", CONFIG, "--weights", str(exported), "--output", str(ts), *THREE, *KEEP_ALL]
    info = load_tool("trace_student").main(argv)["info"]
    assert (info["classes"], info["category_ids"]) == (NAMES, IDS)
    assert info["classes_from"] == f"the weights {exported}"
    # The docs' function, run as written, on an image the trace never saw.
    namespace = {}
    exec(compile(_doc_snippet(), "docs/custom_dataset.md", "exec"), namespace)
    image = deploy.prepare_image(deploy.random_image(64, 64, seed=3), [], "BGR")
    found = namespace["detections"](str(ts), image)
    with torch.no_grad():
        extra = {"defeat_trace.json": ""}
        outputs = dict(zip(info["outputs"], torch.jit.load(str(ts), _extra_files=extra)(image)))
    classes = outputs["pred_classes"].tolist()
    assert len(found) == len(classes) > 0 and {0, 1, 2} & set(classes)
    assert [(name, cid) for name, cid, _, _ in found] == [(NAMES[c], IDS[c]) for c in classes]
    assert [s for _, _, s, _ in found] == pytest.approx(outputs["scores"].tolist())
    # predictions.json: every detection's category_id and category name belong together
    out = tmp_path / "pred"
    load_tool("predict").main(
        [
            "--config-file",
            CONFIG,
            "--weights",
            str(exported),
            "--input",
            data["images"],
            "--output",
            str(out),
            "--score-threshold",
            "0.0",
            "--dataset",
            _spec(data, "ids_pred"),
            *THREE,
        ]
    )
    records = json.load(open(out / "predictions.json"))
    assert records and {r["category_id"] for r in records} <= set(IDS)
    assert all(NAMES[IDS.index(r["category_id"])] == r["category"] for r in records)


def class_identity_of(data, name):
    register_coco_dataset(name, data["json"], data["images"])
    return class_identity(name)
