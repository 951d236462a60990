"""Hostile inputs to the training entry points: each fed to the script (or the one check every
entry point goes through) and its error, warning or handling seen. Grouped by class: outputs
that would replace inputs or earlier runs, datasets as written, images as Detectron2 decodes
them, weights that would evaluate half-random, and settings that make a run meaningless."""

import json
import logging
import os
import uuid

import numpy as np
import pytest
import torch
from coco_files import write_coco
from helpers import CONFIGS, save_random_weights

from defeat.data.coco_json import check_coco_json
from defeat.engine.outputs import check_run_output
from defeat.engine.preflight import check_batch
from defeat.errors import DataCheckError, OutputError, WeightsError


def _name(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _setup(script, config, *opts, flags=()):
    """``script.setup`` on a parsed command line (the checks run; nothing trains)."""
    import importlib

    module = importlib.import_module(script)
    args = module.parse_args(["--config-file", str(config), *flags, *[str(o) for o in opts]])
    return module.setup(args)


def _dataset(tmp_path, name="d", **kw):
    """A 2-class COCO json as plain files and its ``--dataset`` spec."""
    json_file, images = write_coco(str(tmp_path / name), **kw)
    spec_name = _name(name)
    return spec_name, f"{spec_name}={json_file}:{images}", json_file, images


def _plain_opts(train, test, out, *extra):
    return [
        "DATASETS.TRAIN",
        f"('{train}',)",
        "DATASETS.TEST",
        f"('{test}',)" if test else "()",
        "OUTPUT_DIR",
        out,
        "MODEL.ROI_HEADS.NUM_CLASSES",
        2,
        *extra,
    ]


# ---- outputs: nothing written lands on an input or on an earlier run ----


@pytest.fixture(scope="module")
def two_class_teacher(tmp_path_factory):
    """Random weights of a 2-class tiny teacher saved as ``<folder>/model_final.pth``, and a
    config of it in the same folder."""
    folder = tmp_path_factory.mktemp("teacher_run")
    config = folder / "teacher.yaml"
    config.write_text(
        f'_BASE_: "{os.path.abspath(CONFIGS)}/tiny_teacher.yaml"\nMODEL:\n  ROI_HEADS:\n    NUM_CLASSES: 2\n'
    )
    weights = save_random_weights(str(config), str(folder), "model_final")
    return str(config), weights, str(folder)


def test_defeat_run_into_its_teachers_folder_is_refused(tmp_path, two_class_teacher):
    """The copied-config case: the student's OUTPUT_DIR is where the teacher's model_final.pth is."""
    config, weights, folder = two_class_teacher
    name, spec, _, _ = _dataset(tmp_path)
    before = open(weights, "rb").read()
    with pytest.raises(OutputError, match=r"OUTPUT_DIR .* would write over the teacher weights \(MODEL.DEFEAT"):
        _setup(
            "train_net",
            f"{CONFIGS}/tiny_defeat.yaml",
            *_plain_opts(name, None, folder, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", config),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            weights,
            flags=["--dataset", spec],
        )
    assert open(weights, "rb").read() == before and not os.path.exists(os.path.join(folder, "config.yaml"))


def test_lazy_defeat_run_into_its_teachers_folder_is_refused(tmp_path, two_class_teacher):
    config, weights, folder = two_class_teacher
    name, spec, _, _ = _dataset(tmp_path)
    with pytest.raises(OutputError, match=r"train.output_dir .* would write over the teacher weights"):
        _setup(
            "lazy_train_net",
            f"{CONFIGS}/tiny_defeat.py",
            f"train.output_dir={folder}",
            f"model.teacher.config_file={config}",
            f"model.teacher.weights={weights}",
            f"dataloader.train.dataset.names={name}",
            "model.roi_heads.num_classes=2",
            flags=["--dataset", spec],
        )


def test_fine_tuning_from_the_output_folders_own_final_weights_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    weights = save_random_weights(f"{CONFIGS}/tiny_base.yaml", str(out), "model_final")
    name, spec, _, _ = _dataset(tmp_path)
    with pytest.raises(OutputError, match=r"would write over the weights \(MODEL.WEIGHTS\)"):
        _setup(
            "train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts(name, None, out, "MODEL.WEIGHTS", weights),
            flags=["--dataset", spec, "--overwrite"],
        )  # fmt: skip


def test_teacher_config_that_is_the_runs_config_yaml_is_refused(tmp_path, two_class_teacher):
    config, weights, _ = two_class_teacher
    out = tmp_path / "run"
    out.mkdir()
    copied = out / "config.yaml"
    copied.write_text(open(config).read())
    name, spec, _, _ = _dataset(tmp_path)
    with pytest.raises(OutputError, match=r"would write over the teacher config"):
        _setup(
            "train_net",
            f"{CONFIGS}/tiny_defeat.yaml",
            *_plain_opts(name, None, out, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", str(copied)),
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            weights,
            flags=["--dataset", spec],
        )


def test_output_dir_that_is_the_image_folder_is_refused(tmp_path):
    name, spec, _, images = _dataset(tmp_path)
    with pytest.raises(OutputError, match=r"OUTPUT_DIR .* is the image folder of dataset"):
        _setup("train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts(name, None, images), flags=["--dataset", spec])


@pytest.mark.parametrize("record", ["metrics.json", "last_checkpoint", "model_final.pth"])
def test_a_second_run_into_a_folder_with_a_run_is_refused(tmp_path, record):
    out = tmp_path / "run"
    out.mkdir()
    (out / record).write_text("{}\n")
    name, spec, _, _ = _dataset(tmp_path)
    with pytest.raises(OutputError, match=rf"already holds a run \({record}\).*--resume.*--overwrite"):
        _setup("train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts(name, None, out), flags=["--dataset", spec])
    assert (out / record).read_text() == "{}\n"


def test_overwrite_after_the_overrides_replaces_the_runs_records(tmp_path):
    """--overwrite among the trailing overrides (argparse.REMAINDER) is still the option: the
    earlier run's records are moved aside (``setup`` without a held folder: for good)."""
    out = tmp_path / "run"
    out.mkdir()
    for f in ("metrics.json", "last_checkpoint", "events.out.tfevents.1.host"):
        (out / f).write_text("old\n")
    (out / "keep.txt").write_text("mine")
    name, spec, _, _ = _dataset(tmp_path)
    _setup(
        "train_net",
        f"{CONFIGS}/tiny_base.yaml",
        *_plain_opts(name, None, out),
        "--overwrite",
        flags=["--dataset", spec],
    )
    aside = [n for n in os.listdir(out) if n.startswith(".replaced-")]
    assert len(aside) == 1 and sorted(set(os.listdir(out)) - set(aside)) == ["config.yaml", "keep.txt", "log.txt"]
    assert sorted(os.listdir(out / aside[0])) == ["events.out.tfevents.1.host", "last_checkpoint", "metrics.json"]
    assert (out / aside[0] / "metrics.json").read_text() == "old\n"


def test_resume_with_nothing_to_resume_warns(tmp_path, caplog):
    name, spec, _, _ = _dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="defeat.engine.outputs"):
        _setup(
            "train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts(name, None, tmp_path / "new"),
            flags=["--dataset", spec, "--resume"],
        )  # fmt: skip
    assert "holds no checkpoint to resume" in caplog.text


def test_unknown_option_among_the_overrides_is_refused(capsys):
    import train_net

    with pytest.raises(SystemExit):
        train_net.parse_args(["--config-file", "c.yaml", "SOLVER.MAX_ITER", "3", "--overwrit"])
    assert "unrecognized option '--overwrit' among the config overrides" in capsys.readouterr().err


def test_resume_after_the_overrides_is_honoured():
    import train_net

    args = train_net.parse_args(["--config-file", "c.yaml", "SOLVER.MAX_ITER", "3", "--resume", "--num-gpus", "2"])
    assert args.resume and args.num_gpus == 2 and args.opts == ["SOLVER.MAX_ITER", "3"]


def test_evaluating_in_a_training_folder_is_allowed_and_keeps_its_checkpoints(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text('{"iteration": 3, "total_loss": 1.0}\n')
    inputs = {"weights (MODEL.WEIGHTS)": str(out / "model_final.pth")}
    assert check_run_output(str(out), inputs, eval_only=True) == []
    assert (out / "metrics.json").exists()


# ---- datasets as written: refused before any model is built ----


def _write_json(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _valid():
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "height": 64, "width": 64},
            {"id": 2, "file_name": "b.png", "height": 64, "width": 64},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 7, "bbox": [5, 5, 20, 8], "iscrowd": 0},
        ],
        "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def _broken(change):
    data = _valid()
    change(data)
    return data


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["images"][1].update(id=1), r"image id 1 is used by 'a.png' and 'b.png'.*its own id"),
        (lambda d: d["images"][1].update(file_name="a.png"), r"file_name 'a.png' is listed twice"),
        (lambda d: d["annotations"][0].update(bbox=["1", "2", "10", "10"]), r"annotations\[0\].*bbox \['1'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 10]), r"four numbers \[x, y, width, height\]"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, True, 10]), r"has bbox \[1, 2, True, 10\]"),
        (lambda d: d["images"][0].pop("height"), r"images\[0\] \(a.png\) has no 'height'"),
        (lambda d: d["images"][0].update(width="64"), r"images\[0\] \(a.png\) has width='64'; it must be a positive"),
        (lambda d: d["images"][0].update(height=0), r"has height=0"),
        (lambda d: d["annotations"][1].update(category_id=9), r"category_id 9, which is not among the categories"),
        (lambda d: d["categories"].append({"id": 3, "name": "cow"}), r"category id 3 is used twice"),
        (lambda d: d.update(categories=[]), r"has no categories"),
        (lambda d: d.pop("images"), r"has no 'images' list"),
    ],
)
def test_malformed_json_is_refused_naming_entry_and_field(tmp_path, change, match):
    with pytest.raises(DataCheckError, match=match):
        check_coco_json(_write_json(tmp_path, _broken(change)), "mine")


def test_json_that_is_not_a_coco_dict_is_refused(tmp_path):
    with pytest.raises(DataCheckError, match="holds a list, not a COCO dict"):
        check_coco_json(_write_json(tmp_path, [1, 2]))
    broken = tmp_path / "cut.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataCheckError, match=r"cut.json is not valid JSON"):
        check_coco_json(str(broken))


def test_orphan_annotations_are_counted_in_a_warning(tmp_path, caplog):
    data = _broken(lambda d: d["annotations"].append({"id": 3, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]}))
    with caplog.at_level(logging.WARNING, logger="defeat.data.coco_json"):
        summary = check_coco_json(_write_json(tmp_path, data))
    assert "1 of 3 annotations belong to no listed image" in caplog.text and summary.num_annotations == 2


def test_summary_gives_classes_in_detectron2_order_and_placeholders(tmp_path):
    data = _broken(lambda d: d["categories"].insert(0, {"id": 0, "name": "objects"}))
    summary = check_coco_json(_write_json(tmp_path, data))
    assert summary.classes == ["objects", "cat", "dog"] and summary.category_ids == [0, 3, 7]
    assert summary.empty_categories == ["objects"]


def test_duplicate_image_ids_stop_train_net_before_the_model(tmp_path):
    """Detectron2 would keep one image and give it both images' boxes."""
    name, spec, json_file, _ = _dataset(tmp_path)
    data = json.load(open(json_file))
    data["images"][1]["id"] = data["images"][0]["id"]
    json.dump(data, open(json_file, "w"))
    with pytest.raises(DataCheckError, match=r"image id 1 is used by 'img_000.png' and 'img_001.png'"):
        _setup(
            "train_net",
            f"{CONFIGS}/tiny_base.yaml",
            *_plain_opts(name, None, tmp_path / "o"),
            flags=["--dataset", spec],
        )
    assert not (tmp_path / "o").exists()


def test_string_bbox_stops_lazy_train_net(tmp_path):
    name, spec, json_file, _ = _dataset(tmp_path)
    data = json.load(open(json_file))
    data["annotations"][0]["bbox"] = [str(v) for v in data["annotations"][0]["bbox"]]
    json.dump(data, open(json_file, "w"))
    with pytest.raises(DataCheckError, match=r"bbox \['"):
        _setup(
            "lazy_train_net", f"{CONFIGS}/tiny_base.py", f"dataloader.train.dataset.names={name}",
            f"train.output_dir={tmp_path / 'o'}", "model.roi_heads.num_classes=2", flags=["--dataset", spec],
        )  # fmt: skip


def test_placeholder_category_gets_advice_that_fits(tmp_path):
    """Some labelling tools export an empty first category: 3 categories, 2 with boxes, NUM_CLASSES 2."""
    name, spec, json_file, _ = _dataset(tmp_path)
    data = json.load(open(json_file))
    data["categories"].insert(0, {"id": 0, "name": "objects"})
    json.dump(data, open(json_file, "w"))
    advice = r"objects has no boxes to train on \(none, or crowd boxes only\), like the placeholder.*remove it"
    with pytest.raises(DataCheckError, match=advice):
        _setup(
            "train_net",
            f"{CONFIGS}/tiny_base.yaml",
            *_plain_opts(name, None, tmp_path / "o"),
            flags=["--dataset", spec],
        )


@pytest.mark.parametrize(
    "classes, match",
    [
        (("square", "box"), r"test dataset .* names or orders its classes differently"),
        (("bar", "square"), r"test dataset .* names or orders its classes differently"),
    ],
)
def test_test_set_with_other_classes_is_refused(tmp_path, classes, match):
    name, spec, _, _ = _dataset(tmp_path)
    test, test_spec, _, _ = _dataset(tmp_path, "t", classes=classes)
    with pytest.raises(DataCheckError, match=match):
        _setup(
            "train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts(name, test, tmp_path / "o"),
            flags=["--dataset", spec, "--dataset", test_spec],
        )  # fmt: skip


def test_eval_only_on_a_test_set_with_more_classes_than_the_model_is_refused(tmp_path):
    test, test_spec, _, _ = _dataset(tmp_path, "t", classes=("a", "b", "c"))
    weights = save_random_weights(f"{CONFIGS}/tiny_base.yaml", str(tmp_path), "w")
    with pytest.raises(DataCheckError, match=r"test dataset .* has 3 categories \(a, b, c\) but the model 2"):
        _setup(
            "train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts("nothing_registered", test, tmp_path / "o"),
            "MODEL.WEIGHTS", weights, flags=["--dataset", test_spec, "--eval-only"],
        )  # fmt: skip


def test_two_training_sets_with_different_classes_are_refused(tmp_path):
    a, spec_a, _, _ = _dataset(tmp_path, "a")
    b, spec_b, _, _ = _dataset(tmp_path, "b", classes=("square", "circle"))
    with pytest.raises(DataCheckError, match=r"training datasets .* name their classes differently"):
        _setup(
            "train_net", f"{CONFIGS}/tiny_base.yaml", *_plain_opts(a, None, tmp_path / "o"),
            "DATASETS.TRAIN", f"('{a}', '{b}')", flags=["--dataset", spec_a, "--dataset", spec_b],
        )  # fmt: skip


def test_mask_model_on_a_json_without_segmentation_is_refused(tmp_path):
    name, spec, _, _ = _dataset(tmp_path)
    with pytest.raises(DataCheckError, match=r"have no 'segmentation', but the model predicts masks \(MODEL.MASK_ON\)"):
        _setup(
            "train_net",
            f"{CONFIGS}/tiny_mask_base.yaml",
            *_plain_opts(name, None, tmp_path / "o"),
            flags=["--dataset", spec],
        )


@pytest.mark.parametrize("total, world", [(2, 3), (3, 2), (1, 2)])
def test_batch_that_does_not_divide_among_processes_is_refused(total, world):
    from helpers import make_cfg

    cfg = make_cfg(f"{CONFIGS}/tiny_base.yaml", "SOLVER.IMS_PER_BATCH", total)
    with pytest.raises(
        DataCheckError, match=rf"SOLVER.IMS_PER_BATCH = {total} does not divide among {world} processes"
    ):
        check_batch(cfg, world)
    check_batch(cfg, 1)


def test_lazy_batch_that_does_not_divide_is_refused():
    from helpers import lazy_cfg

    cfg = lazy_cfg(f"{CONFIGS}/tiny_base.py", "dataloader.train.total_batch_size=3")
    with pytest.raises(DataCheckError, match=r"dataloader.train.total_batch_size = 3 does not divide among 2"):
        check_batch(cfg, 2)


# ---- images as Detectron2 decodes them ----


def _record(path, w, h):
    return {"file_name": str(path), "width": w, "height": h, "image_id": 1, "annotations": []}


def test_exif_orientation_that_disagrees_with_the_json_is_named(tmp_path):
    from PIL import Image

    from defeat.data.checks import check_dataset_images

    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[274] = 6  # rotate 90: Detectron2 shows it 48 x 80
    Image.fromarray(np.zeros((48, 80, 3), np.uint8)).save(path, exif=exif)
    with pytest.raises(DataCheckError, match=r"48x80 \(WxH\) after the EXIF orientation \(6\).*annotations say 80x48"):
        check_dataset_images([_record(path, 80, 48)], "exif")
    assert check_dataset_images([_record(path, 48, 80)], "exif") == 1


def test_size_swapped_without_exif_is_named(tmp_path):
    import cv2

    from defeat.data.checks import check_dataset_images

    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.zeros((40, 90, 3), np.uint8))
    with pytest.raises(DataCheckError, match=r"image is 90x40 \(WxH\) but the annotations say 40x90"):
        check_dataset_images([_record(path, 40, 90)], "swap")


def test_16_bit_image_is_refused_before_detectron2_clips_it(tmp_path):
    from PIL import Image

    from defeat.data.checks import check_dataset_images

    path = tmp_path / "depth.png"
    Image.fromarray(np.full((20, 30), 40000, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    with pytest.raises(DataCheckError, match=r"pixels \(PIL mode I;16|pixels \(PIL mode I\)"):
        check_dataset_images([_record(path, 30, 20)], "deep")


# ---- weights: never evaluated half-random ----


def test_eval_only_with_weights_of_another_width_is_refused(tmp_path, tiny_dataset):
    from helpers import data_opts

    import train_net

    wide = tmp_path / "wide.yaml"
    wide.write_text(f'_BASE_: "{os.path.abspath(CONFIGS)}/tiny_base.yaml"\nMODEL:\n  FPN:\n    OUT_CHANNELS: 48\n')
    weights = save_random_weights(str(wide), str(tmp_path), "wide")
    args = train_net.parse_args(
        ["--config-file", f"{CONFIGS}/tiny_base.yaml", "--eval-only", *map(str, data_opts(tmp_path / "o"))]
        + ["MODEL.WEIGHTS", weights]
    )
    with pytest.raises(
        WeightsError, match=r"wide.pth \(MODEL.WEIGHTS\) do not fit GeneralizedRCNN.*tensors of another"
    ):
        train_net.main(args)


def test_eval_only_without_weights_is_refused(tmp_path, tiny_dataset):
    from helpers import data_opts

    import train_net

    args = train_net.parse_args(
        ["--config-file", f"{CONFIGS}/tiny_base.yaml", "--eval-only", *map(str, data_opts(tmp_path / "o"))]
    )
    with pytest.raises(WeightsError, match=r"MODEL.WEIGHTS is empty: evaluating or predicting needs trained weights"):
        train_net.main(args)


def test_lazy_eval_only_with_partial_weights_is_refused(tmp_path, tiny_dataset):
    from helpers import TINY

    import lazy_train_net

    full = torch.load(save_random_weights(f"{CONFIGS}/tiny_base.yaml", str(tmp_path), "full"), weights_only=False)
    partial = tmp_path / "backbone.pth"
    torch.save({"model": {k: v for k, v in full["model"].items() if k.startswith("backbone.")}}, partial)
    args = lazy_train_net.parse_args(
        ["--config-file", f"{CONFIGS}/tiny_base.py", "--eval-only", f"train.init_checkpoint={partial}"]
        + [f"train.output_dir={tmp_path / 'o'}", f"dataloader.test.dataset.names={TINY[1]}"]
        + ["model.roi_heads.num_classes=10"]
    )
    with pytest.raises(WeightsError, match=r"\(train.init_checkpoint\) do not fit .*tensors missing"):
        lazy_train_net.main(args)


def test_strict_loading_refuses_files_without_a_model(tmp_path):
    from detectron2.modeling import build_model
    from helpers import make_cfg

    from defeat.checkpoint import load_weights_strictly

    model = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml"))
    empty = tmp_path / "empty.pth"
    torch.save({"optimizer": {}}, empty)
    with pytest.raises(WeightsError, match=r"MODEL.WEIGHTS: cannot read weights .*empty.pth"):
        load_weights_strictly(model, str(empty))
    torch.save({"model": {}}, empty)
    with pytest.raises(WeightsError, match=r"empty.pth \(MODEL.WEIGHTS\) do not fit .*tensors missing"):
        load_weights_strictly(model, str(empty))
    with pytest.raises(WeightsError, match="weights not found"):
        load_weights_strictly(model, str(tmp_path / "nope.pth"))
    load_weights_strictly(model, str(empty), allow_random=True)  # asked for: a warning only


# ---- settings whose combination is meaningless ----


@pytest.mark.parametrize("scale", [0.05, 20.0, 100.0])
def test_teacher_input_scale_far_out_of_range_is_refused(teacher_weights, scale):
    from detectron2.modeling import build_model
    from helpers import defeat_cfg

    from defeat import DeFeatConfigError

    with pytest.raises(DeFeatConfigError, match=r"INPUT_SCALE = \S+ must be between 0.125 and 8"):
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.TEACHER.INPUT_SCALE", scale))
