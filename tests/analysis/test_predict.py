"""tools/predict.py: detections drawn (one colour per class, ground truth on request); YAML and
LazyConfig configs; no random weights; inputs kept."""

import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest
import torch
from coco_files import CLASSES, load_tool, tiny_student_files, tool_exit, write_coco
from helpers import CONFIGS, make_cfg


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """Weights of the tiny student (2 classes) covering every parameter, and a few images."""
    return tiny_student_files(tmp_path_factory.mktemp("student"), num_images=3, category_ids=(3, 7))


def _run(*argv):
    return load_tool("predict").main([str(a) for a in argv])


def _base(weights, images, out, *extra):
    return [
        "--config-file",
        f"{CONFIGS}/tiny_base.yaml",
        "--weights",
        weights,
        "--input",
        images,
        "--output",
        out,
        *extra,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
        # tiny_base.yaml names the 10-class demo set: registered by an earlier test in the same
        # process, its classes would refuse these 2-class images' names (a later DATASETS.TRAIN wins)
        "DATASETS.TRAIN",
        "()",
    ]


def test_folder_drawn_with_class_names_and_threshold(student, tmp_path):
    weights, json_file, images = student
    before = {f: open(os.path.join(images, f), "rb").read() for f in os.listdir(images)}
    out = tmp_path / "pred"
    written = _run(
        *_base(weights, images, out, "--score-threshold", 0.0, "--dataset", f"pred_val={json_file}:{images}")
    )
    assert sorted(os.path.basename(p) for p in written) == sorted(before)
    dets = json.load(open(out / "predictions.json"))
    assert dets, "an untrained model at threshold 0 still returns its top detections"
    # Detectron2's COCO results format: the dataset's own category ids (3, 7), its image ids, XYWH boxes.
    data = json.load(open(json_file))
    ids_by_name = {img["file_name"]: img["id"] for img in data["images"]}
    assert {d["category_id"] for d in dets} <= {3, 7}
    assert all(d["category"] == {3: CLASSES[0], 7: CLASSES[1]}[d["category_id"]] for d in dets)
    assert all(d["image_id"] == ids_by_name[os.path.basename(d["file_name"])] for d in dets)
    assert all(len(d["bbox"]) == 4 and d["bbox"][2] >= 0 and d["bbox"][3] >= 0 for d in dets)
    assert all(d["bbox"][0] + d["bbox"][2] <= 64.01 and d["bbox"][1] + d["bbox"][3] <= 64.01 for d in dets)
    # The drawing differs from the input exactly where detections are.
    drawn = cv2.imread(written[0])
    original = cv2.imread(os.path.join(images, os.path.basename(written[0])))
    first = [d for d in dets if os.path.basename(d["file_name"]) == os.path.basename(written[0])]
    assert drawn.shape == original.shape and (np.abs(drawn.astype(int) - original).sum() > 0) == bool(first)
    # A higher threshold keeps exactly the detections at or above it.
    scores = sorted({d["score"] for d in dets})  # (rounded to 1e-4 in the json)
    k = next(i for i in range(len(scores) // 2, len(scores) - 1) if scores[i + 1] - scores[i] > 2e-4)
    threshold = (scores[k] + scores[k + 1]) / 2
    _run(*_base(weights, images, tmp_path / "high", "--score-threshold", threshold))
    high = json.load(open(tmp_path / "high" / "predictions.json"))
    assert high and all(d["score"] >= threshold for d in high)
    assert len(high) == sum(d["score"] >= threshold for d in dets)
    assert {f: open(os.path.join(images, f), "rb").read() for f in os.listdir(images)} == before  # inputs intact


def test_without_a_dataset_category_ids_are_class_indices_and_said_so(student, tmp_path, caplog):
    weights, _, images = student
    with caplog.at_level("WARNING", logger="defeat.tools.predict"):
        _run(*_base(weights, images, tmp_path / "o", "--score-threshold", 0.0))
    dets = json.load(open(tmp_path / "o" / "predictions.json"))
    assert dets and {d["category_id"] for d in dets} <= {0, 1} and "category" not in dets[0]
    assert "category_id in predictions.json is the model's class index" in caplog.text


def test_refuses_random_weights_unless_asked(student, tmp_path):
    weights, _, images = student
    argv = [
        "--config-file",
        f"{CONFIGS}/tiny_base.yaml",
        "--input",
        images,
        "--output",
        tmp_path / "o",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
    ]
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS is empty, so the model would predict with random weights"):
        _run(*argv)
    assert len(_run(*argv[:4], "--allow-random-weights", *argv[4:])) == 3
    partial = tmp_path / "backbone_only.pth"
    state = torch.load(weights, map_location="cpu")["model"]
    torch.save({"model": {k: v for k, v in state.items() if k.startswith("backbone.")}}, partial)
    with pytest.raises(
        SystemExit, match=r"backbone_only.pth \(--weights\) do not fit .*14 tensors missing .*: proposal_gen"
    ):
        _run(*argv[:4], "--weights", partial, *argv[4:5], tmp_path / "o2", *argv[6:])


def test_never_writes_into_the_input_folder(student, tmp_path):
    weights, _, images = student
    with pytest.raises(SystemExit, match=r"--output .* is the input folder \(--input\)"):
        _run(*_base(weights, images, images))
    single = os.path.join(images, "img_000.png")
    with pytest.raises(SystemExit, match=r"--output .* is the input folder \(--input\)"):
        _run(*_base(weights, single, images))
    assert len(_run(*_base(weights, single, tmp_path / "one"))) == 1


def test_defeat_config_predicts_with_its_student(student, tmp_path):
    """A DeFeat config predicts with its student: the same detections, image by image, as the
    plain student config with the same weights (at threshold 0, so there are many)."""
    weights, _, images = student
    common = ["--weights", weights, "--input", images, "--score-threshold", 0.0]
    written = _run(
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        *common,
        "--output",
        tmp_path / "defeat",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        "",
    )
    assert len(written) == 3
    _run(
        "--config-file",
        f"{CONFIGS}/tiny_base.yaml",
        *common,
        "--output",
        tmp_path / "plain",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
    )
    got, expected = (json.load(open(tmp_path / d / "predictions.json")) for d in ("defeat", "plain"))
    assert len(expected) > 0
    assert got == expected
    # ... and they are the weights' detections, not a fresh model's: another seed's weights differ.
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(1)
    other = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 2))
    (tmp_path / "w1").mkdir()
    DetectionCheckpointer(other, str(tmp_path / "w1")).save("model_final")
    _run(
        "--config-file",
        f"{CONFIGS}/tiny_defeat.yaml",
        "--weights",
        tmp_path / "w1" / "model_final.pth",
        "--input",
        images,
        "--score-threshold",
        0.0,
        "--output",
        tmp_path / "other",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        "",
    )
    assert json.load(open(tmp_path / "other" / "predictions.json")) != expected


def test_bad_inputs_and_class_names_of_another_dataset(student, tmp_path):
    weights, _, images = student
    with pytest.raises(SystemExit, match="--input not found: .*nope"):
        _run(*_base(weights, tmp_path / "nope", tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="holds no images"):
        _run(*_base(weights, tmp_path / "empty", tmp_path / "o"))
    other, other_images = write_coco(str(tmp_path / "three"), num_images=1, classes=("a", "b", "c"))
    with pytest.raises(
        SystemExit,
        match="dataset pred_three has 3 classes but the model 2 "
        r"\(MODEL.ROI_HEADS.NUM_CLASSES\)",
    ):
        _run(*_base(weights, images, tmp_path / "o", "--dataset", f"pred_three={other}:{other_images}"))


def test_bad_config_or_override_is_one_clear_error(student, tmp_path):
    """The one loader's errors reach the user as predict.py's: the file, or the override, named."""
    weights, _, images = student
    with pytest.raises(SystemExit, match=r"--config-file: config file not found: 'nope.yaml'"):
        _run("--config-file", "nope.yaml", "--weights", weights, "--input", images, "--output", tmp_path / "o")
    with pytest.raises(SystemExit, match=r"--config-file: .*cannot apply overrides .*Non-existent key: MODEL.NOPE"):
        _run(*_base(weights, images, tmp_path / "o"), "MODEL.NOPE", 1)
    with pytest.raises(SystemExit, match=r"--config-file: override 'train.max_itr=1'"):
        _run(
            "--config-file", f"{CONFIGS}/tiny_base.py", "--weights", weights, "--input", images,
            "--output", tmp_path / "o", "train.max_itr=1",
        )  # fmt: skip


def test_weights_loaded_quietly_no_scratch_line_and_defeats_own_tensors_named_once(student, tmp_path, caplog):
    """Predicting from a DeFeat checkpoint (the student's tensors plus ``distiller.adapters.*``) with
    the plain student config: no 'Initializing model from scratch' (the weights are loaded), no
    'not used by the model' list, one line naming the adapters left out; same detections as the
    student's own file."""
    weights, _, images = student
    state = torch.load(weights, map_location="cpu")["model"]
    adapters = {f"distiller.adapters.p{i}.{p}": torch.zeros(3) for i in range(2, 7) for p in ("weight", "bias")}
    torch.save({"model": {**state, **adapters}, "iteration": 9}, tmp_path / "defeat_run.pth")
    with caplog.at_level("INFO"):
        _run(*_base(str(tmp_path / "defeat_run.pth"), images, tmp_path / "o", "--score-threshold", 0.0))
    assert "from scratch" not in caplog.text and "not used by the model" not in caplog.text
    assert caplog.text.count("that are DeFeat's own (distiller.adapters.*)") == 1
    _run(*_base(weights, images, tmp_path / "plain", "--score-threshold", 0.0))
    got, expected = (json.load(open(tmp_path / d / "predictions.json")) for d in ("o", "plain"))
    assert got == expected and got


def test_show_gt_draws_the_datasets_boxes_dashed_beside_the_predictions(student, tmp_path):
    """The same predictions with and without --show-gt; the drawings differ only along the
    dataset's boxes of each image (in input pixels); without predictions on top (none kept),
    every side of every box is drawn."""
    weights, json_file, images = student
    data = json.load(open(json_file))
    by_name = {img["file_name"]: img["id"] for img in data["images"]}

    def gt_boxes(drawn):
        image_id = by_name[os.path.basename(drawn)]
        return [
            tuple(int(round(v)) for v in (x, y, x + w, y + h))
            for x, y, w, h in (a["bbox"] for a in data["annotations"] if a["image_id"] == image_id)
        ]

    def changes(folders, *opts):
        dataset = ["--dataset", f"gt_val={json_file}:{images}"]
        runs = [_run(*_base(weights, images, tmp_path / f, *dataset, *extra), *opts) for f, extra in folders]
        preds = [json.load(open(tmp_path / f / "predictions.json")) for f, _ in folders]
        assert preds[0] == preds[1]
        return [(b, np.any(cv2.imread(a) != cv2.imread(b), axis=2)) for a, b in zip(*runs)], preds[0]

    def near(changed, boxes):
        mask = np.zeros_like(changed)
        for x1, y1, x2, y2 in boxes:
            mask[max(y1 - 2, 0) : y2 + 3, max(x1 - 2, 0) : x2 + 3] = True
            mask[y1 + 3 : y2 - 2, x1 + 3 : x2 - 2] = False
        return mask

    drawn, preds = changes([("plain", []), ("gt", ["--show-gt"])])
    assert preds  # predictions, and their labels drawn on top (on 64-px images they may hide the boxes)
    for path, changed in drawn:
        assert not (changed & ~near(changed, gt_boxes(path))).any()
    drawn, preds = changes([("plain0", []), ("gt0", ["--show-gt"])], "TEST.DETECTIONS_PER_IMAGE", 0)
    assert preds == []
    for path, changed in drawn:
        boxes = gt_boxes(path)
        assert boxes and not (changed & ~near(changed, boxes)).any()
        for x1, y1, x2, y2 in boxes:  # each side drawn (dashed: a share of its pixels)
            x2, y2 = min(x2, 63), min(y2, 63)
            for side in (changed[y1 : y2 + 1, x1], changed[y1 : y2 + 1, x2], changed[y1, x1 : x2 + 1]):
                assert side.any(), (path, (x1, y1, x2, y2))


def test_show_gt_needs_a_dataset_that_lists_the_inputs(student, tmp_path, capsys):
    weights, json_file, images = student
    with pytest.raises(SystemExit) as e:
        _run(*_base(weights, images, tmp_path / "o", "--show-gt"))
    assert e.value.code == 2 and "--show-gt needs --dataset" in capsys.readouterr().err
    other, other_images = write_coco(str(tmp_path / "other"), num_images=2)
    with pytest.raises(SystemExit, match=r"--show-gt: dataset 'gt_other' lists none of the 3 input images"):
        _run(*_base(weights, images, tmp_path / "o", "--dataset", f"gt_other={other}:{other_images}", "--show-gt"))


def test_a_lazyconfig_predicts_as_its_yaml_twin(student, tmp_path):
    """tests/configs/tiny_base.py (and its DeFeat twin tiny_defeat.py, as its student) with the
    YAML student's weights: the same detections as tiny_base.yaml."""
    weights, _, images = student
    common = ["--weights", weights, "--input", images, "--score-threshold", 0.0]
    _run(
        "--config-file",
        f"{CONFIGS}/tiny_base.yaml",
        *common,
        "--output",
        tmp_path / "yaml",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
    )
    for config in ("tiny_base.py", "tiny_defeat.py"):
        written = _run(
            "--config-file",
            f"{CONFIGS}/{config}",
            *common,
            "--output",
            tmp_path / config,
            "model.roi_heads.num_classes=2",
        )
        assert len(written) == 3 and all(cv2.imread(p) is not None for p in written)
        got = json.load(open(tmp_path / config / "predictions.json"))
        assert got and got == json.load(open(tmp_path / "yaml" / "predictions.json")), config


# ---- what predict.py is given: image ids, class names, broken images, a failure mid-way ----


def _truncate(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])


def test_image_ids_are_unique_the_datasets_where_it_lists_the_file(student, tmp_path):
    """Three images the dataset lists (ids 1-3) and one it does not, fourth in the folder: the
    dataset's ids, and 4 (past its largest) for the other, not its position 3."""
    weights = student[0]
    json_file, images = write_coco(str(tmp_path / "data"), num_images=3)
    cv2.imwrite(os.path.join(images, "img_009.png"), np.full((64, 64, 3), 90, np.uint8))
    _run(
        *_base(weights, images, tmp_path / "o", "--score-threshold", 0.0, "--dataset", f"ids_val={json_file}:{images}")
    )
    dets = json.load(open(tmp_path / "o" / "predictions.json"))
    ids = {os.path.basename(d["file_name"]): d["image_id"] for d in dets}
    assert ids == {"img_000.png": 1, "img_001.png": 2, "img_002.png": 3, "img_009.png": 4}


def test_class_names_of_another_dataset_than_the_training_set_are_refused(student, tmp_path, monkeypatch):
    weights, _, images = student
    train, train_images = write_coco(str(tmp_path / "train"), num_images=2)  # square, bar
    monkeypatch.setenv("DEFEAT_COCO_DATASETS", f"names_train={train}:{train_images}")
    other, other_images = write_coco(str(tmp_path / "other"), num_images=1, classes=("cat", "dog"))
    argv = _base(weights, images, tmp_path / "o", "--dataset", f"names_other={other}:{other_images}")
    text = tool_exit("predict", *argv, "DATASETS.TRAIN", "('names_train',)")
    assert "dataset 'names_other' names the classes cat, dog but the model was trained on 'names_train'" in text
    assert "square, bar" in text and "Pass --dataset names_train" in text and len(text.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    # the training set's own names label the boxes
    same = _base(weights, images, tmp_path / "ok", "--dataset", "names_train", "--score-threshold", 0.0)
    assert len(_run(*same, "DATASETS.TRAIN", "('names_train',)")) == 3
    assert {d["category"] for d in json.load(open(tmp_path / "ok" / "predictions.json"))} <= set(CLASSES)


def test_a_truncated_image_is_refused_before_anything_is_written(student, tmp_path):
    weights, _, images = student
    folder = tmp_path / "in"
    shutil.copytree(images, folder)
    _truncate(folder / "img_001.png")
    text = tool_exit("predict", *_base(weights, folder, tmp_path / "o"))
    assert "--input: 1 of 3 images cannot be read: " in text and "img_001.png" in text
    assert "--check-images none" in text and len(text.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_an_image_that_fails_mid_way_leaves_the_predictions_done_and_says_how_to_go_on(student, tmp_path):
    """Past the check (--check-images none), the truncated second image fails while predicting:
    predictions.json holds the first image's detections, and the message names the image."""
    weights, _, images = student
    folder = tmp_path / "in"
    shutil.copytree(images, folder)
    _truncate(folder / "img_001.png")
    argv = ["--check-images", "none", "--score-threshold", 0.0]
    text = tool_exit("predict", *_base(weights, folder, tmp_path / "o", *argv))
    assert re.search(r"image 2 of 3, .*img_001.png, failed: .*holds the detections of the 1 images before it", text)
    assert "move it out of --input, then run again with --overwrite" in text
    dets = json.load(open(tmp_path / "o" / "predictions.json"))
    assert dets and {os.path.basename(d["file_name"]) for d in dets} == {"img_000.png"}
    os.remove(folder / "img_001.png")
    assert len(_run(*_base(weights, folder, tmp_path / "o", *argv, "--overwrite"))) == 2


def test_a_dataset_image_outside_its_image_root_is_refused(student, tmp_path):
    weights, _, images = student
    json_file, root = write_coco(str(tmp_path / "data"), num_images=2)
    data = json.load(open(json_file))
    data["images"][1]["file_name"] = "../../etc/x.png"
    with open(json_file, "w") as f:
        json.dump(data, f)
    text = tool_exit("predict", *_base(weights, images, tmp_path / "o", "--dataset", f"escape={json_file}"))
    assert "dataset 'escape': image '" in text and "etc/x.png' resolves to" in text and "outside its image" in text
    assert not (tmp_path / "o").exists()


# ---- images the test size resizes: detections in the original image's pixels ----


def _default_predictor(weights, threshold=0.0):
    """Detectron2's own ``DefaultPredictor`` on the tiny student's weights (an independent path:
    its resize, its rescaling to the original image)."""
    from detectron2.engine import DefaultPredictor

    cfg = make_cfg(f"{CONFIGS}/tiny_base.yaml", "MODEL.ROI_HEADS.NUM_CLASSES", 2, "MODEL.WEIGHTS", weights)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    return DefaultPredictor(cfg)


@pytest.mark.parametrize("config", ["tiny_base.yaml", "tiny_base.py"])
def test_a_resized_image_gets_boxes_in_its_own_pixels_as_default_predictor(student, tmp_path, config):
    from detectron2.data import transforms as T

    from defeat.analysis.deploy import random_image

    weights = student[0]
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = {"large.png": (150, 260), "small.png": (30, 44)}  # (H, W); the test size is 64 px, 64 at most
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(folder / name), random_image(h, w, seed=h))
        resized = T.ResizeShortestEdge(64, 64).get_transform(np.zeros((h, w, 3), np.uint8))
        assert (resized.new_h, resized.new_w) != (h, w)  # the test size resizes it
    override = "MODEL.ROI_HEADS.NUM_CLASSES 2" if config.endswith(".yaml") else "model.roi_heads.num_classes=2"
    argv = ["--config-file", f"{CONFIGS}/{config}", "--weights", weights, "--input", folder]
    _run(*argv, "--output", tmp_path / "out", "--score-threshold", 0.0, *override.split())
    dets = json.load(open(tmp_path / "out" / "predictions.json"))
    reference = _default_predictor(weights)
    for name, (h, w) in sizes.items():
        got = [d for d in dets if os.path.basename(d["file_name"]) == name]
        expected = reference(cv2.imread(str(folder / name)))["instances"]
        assert len(got) == len(expected) > 0, name
        boxes = np.array([d["bbox"] for d in got])  # XYWH in the json
        xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)
        np.testing.assert_allclose(xyxy, expected.pred_boxes.tensor.numpy(), atol=0.02)
        assert [d["category_id"] for d in got] == expected.pred_classes.tolist()
        assert xyxy[:, [0, 2]].max() <= w + 1e-3 and xyxy[:, [1, 3]].max() <= h + 1e-3
    large = np.array([d["bbox"] for d in dets if d["file_name"].endswith("large.png")])
    assert (large[:, 0] + large[:, 2]).max() > 64  # beyond the resized image: the original's pixels


def test_a_uniform_image_at_twice_and_half_the_test_size_gives_scaled_boxes(student, tmp_path):
    """Independent of Detectron2's predictor: a uniform image resizes exactly, so the model sees
    the same 64x64 input for 32x32, 64x64 and 128x128 originals, and their boxes must scale with
    the original's side (x0.5, x1, x2)."""
    weights = student[0]
    folder = tmp_path / "in"
    folder.mkdir()
    for side in (32, 64, 128):
        cv2.imwrite(str(folder / f"s{side}.png"), np.full((side, side, 3), (30, 120, 200), np.uint8))
    _run(*_base(weights, folder, tmp_path / "out", "--score-threshold", 0.0))
    dets = json.load(open(tmp_path / "out" / "predictions.json"))
    boxes = {s: np.array([d["bbox"] for d in dets if d["file_name"].endswith(f"s{s}.png")]) for s in (32, 64, 128)}
    assert len(boxes[64]) > 0 and all(b.shape == boxes[64].shape for b in boxes.values())
    np.testing.assert_allclose(boxes[128], 2 * boxes[64], atol=0.03)  # the json rounds to 0.01 px
    np.testing.assert_allclose(boxes[32], 0.5 * boxes[64], atol=0.03)


def test_show_gt_leaves_crowd_boxes_undrawn_and_counts_them(student, tmp_path, caplog):
    """A crowd region (iscrowd 1) is not an object: --show-gt draws the image's object box and
    nothing at the crowd box, and the log line counts it."""
    weights = student[0]
    json_file, images = write_coco(
        str(tmp_path / "data"), num_images=1, boxes=lambda i: [(4, 4, 20, 20, 0), (36, 36, 24, 24, 1)]
    )
    data = json.load(open(json_file))
    data["annotations"][1]["iscrowd"] = 1
    json.dump(data, open(json_file, "w"))
    dataset = ["--dataset", f"crowd_val={json_file}:{images}", "TEST.DETECTIONS_PER_IMAGE", 0]
    plain = _run(*_base(weights, images, tmp_path / "plain", *dataset))
    with caplog.at_level("INFO", logger="defeat.tools.predict"):
        shown = _run(*_base(weights, images, tmp_path / "gt", "--show-gt", *dataset))
    changed = np.any(cv2.imread(plain[0]) != cv2.imread(shown[0]), axis=2)
    assert changed[2:27, 2:27].any()  # the object's dashed box
    assert not changed[30:, 30:].any()  # nothing at the crowd region (36..60)
    assert changed.sum() == changed[:30, :30].sum()
    assert "0 detections (1 ground-truth boxes; 1 crowd boxes not drawn)" in caplog.text
