"""defeat.data.datasets: COCO-format datasets named by NAME=ANNOTATIONS.json[:IMAGE_ROOT], no code."""

import os
import subprocess
import sys
import uuid

import pytest
from coco_files import CLASSES, write_coco
from detectron2.data import DatasetCatalog, MetadataCatalog
from helpers import CONFIGS, REPO

from defeat.data.datasets import (
    DATASETS_ENV,
    DatasetSpecError,
    parse_dataset_spec,
    preloaded_datasets,
    register_coco_dataset,
    setup_datasets,
    specs_from_env,
)


def _name(prefix="ds"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_spec_parsing_paths_and_default_image_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = parse_dataset_spec("my_train=data/train.json")
    assert spec.name == "my_train"
    assert spec.json_file == str(tmp_path / "data" / "train.json")
    assert spec.image_root == str(tmp_path / "data")  # the json's folder
    spec = parse_dataset_spec("v=a.json:imgs/val")
    assert (spec.json_file, spec.image_root) == (str(tmp_path / "a.json"), str(tmp_path / "imgs" / "val"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATA_ROOT", "/data/x")
    spec = parse_dataset_spec("t=~/ann/t.json:$DATA_ROOT/images")
    assert (spec.json_file, spec.image_root) == (str(tmp_path / "home" / "ann" / "t.json"), "/data/x/images")
    for bad in ("no_equals.json", "name=annotations.txt", "=a.json", "a=b.json;c=d.json"):
        with pytest.raises(DatasetSpecError, match=r"expected NAME=ANNOTATIONS.json\[:IMAGE_ROOT\]"):
            parse_dataset_spec(bad)


def test_registered_dataset_loads_with_class_names_and_evaluator(tmp_path):
    beside, _ = write_coco(str(tmp_path / "flat"), num_images=2, image_dir=".")
    name = _name()
    register_coco_dataset(name, beside)  # images beside the json: no IMAGE_ROOT needed
    assert _read_first(name).shape == (64, 64, 3)

    json_file, images = write_coco(str(tmp_path), num_images=3)
    name = _name()
    spec = register_coco_dataset(name, json_file, images)
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 3 and dicts[0]["file_name"] == os.path.join(images, "img_000.png")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == list(CLASSES) and meta.evaluator_type == "coco"
    assert (meta.json_file, meta.image_root) == (spec.json_file, spec.image_root)
    assert register_coco_dataset(name, json_file, images) == spec  # the same files again: fine


def _read_first(name):
    from detectron2.data.detection_utils import read_image

    return read_image(DatasetCatalog.get(name)[0]["file_name"])


def test_missing_files_clashing_names_and_missing_categories_are_clear_errors(tmp_path):
    json_file, images = write_coco(str(tmp_path), num_images=2)
    with pytest.raises(DatasetSpecError, match=r"'d1': annotation file not found: .*nope\.json"):
        register_coco_dataset("d1", str(tmp_path / "nope.json"), images)
    with pytest.raises(DatasetSpecError, match=r"'d1': image folder not found: .*pics"):
        register_coco_dataset("d1", json_file, str(tmp_path / "pics"))
    name = _name()
    register_coco_dataset(name, json_file, images)
    other_json, _ = write_coco(str(tmp_path / "other"), num_images=2)
    with pytest.raises(DatasetSpecError, match=rf"{name}' is already registered with other files.*train\.json"):
        register_coco_dataset(name, other_json, images)
    with pytest.raises(DatasetSpecError, match=r"'coco_2017_train' is already registered"):  # a builtin name
        register_coco_dataset("coco_2017_train", json_file, images)
    bare, _ = write_coco(str(tmp_path / "bare"), num_images=2, categories=False)
    name = _name()
    register_coco_dataset(name, bare)  # registration is cheap: the json is read once, when loaded
    with pytest.raises(DatasetSpecError, match=rf"'{name}': .*bare/train.json has no 'categories'"):
        DatasetCatalog.get(name)


def test_environment_variable_and_export(tmp_path, monkeypatch):
    json_file, images = write_coco(str(tmp_path), num_images=2)
    a, b = _name("env"), _name("cli")
    monkeypatch.setenv(DATASETS_ENV, f"{a}={json_file}:{images}")
    specs = setup_datasets([f"{b}={json_file}:{images}"])
    assert [s.name for s in specs] == [a, b]
    assert {a, b} <= set(DatasetCatalog.list())
    assert [parse_dataset_spec(s).name for s in specs_from_env()] == [a, b]  # exported for later processes


def test_dataset_option_before_or_after_the_config_overrides(capsys):
    import train_net

    opts = ["DATASETS.TRAIN", "('a',)", "SOLVER.MAX_ITER", "3"]
    for argv in (
        ["--config-file", "c.yaml", "--dataset", "a=x.json", "--dataset", "b=y.json:imgs", *opts],
        ["--config-file", "c.yaml", *opts, "--dataset", "a=x.json", "--dataset=b=y.json:imgs"],
        ["--config-file", "c.yaml", "--dataset", "a=x.json", *opts, "--dataset", "b=y.json:imgs"],
    ):
        args = train_net.parse_args(argv)
        assert args.dataset == ["a=x.json", "b=y.json:imgs"] and args.opts == opts, argv
    with pytest.raises(SystemExit):
        train_net.parse_args(["--config-file", "c.yaml", *opts, "--dataset"])
    assert "--dataset needs a value" in capsys.readouterr().err


def test_preloaded_datasets_return_the_given_dicts_then_restore(tmp_path):
    calls = []
    name = _name("pre")
    DatasetCatalog.register(name, lambda: calls.append(1) or [{"file_name": "x"}])
    given = [{"file_name": "y"}]
    with preloaded_datasets({name: given}):
        assert DatasetCatalog.get(name) is given
    assert not calls
    assert DatasetCatalog.get(name) == [{"file_name": "x"}] and calls == [1]


def test_a_fresh_process_sees_the_exported_names(tmp_path):
    """What a DDP worker or a train_net.py started by benchmarks/accuracy.py does: setup_datasets()."""
    json_file, images = write_coco(str(tmp_path), num_images=2)
    name = _name("proc")
    code = (
        "from detectron2.data import DatasetCatalog; from defeat.data.datasets import setup_datasets; "
        f"setup_datasets(); print(len(DatasetCatalog.get('{name}')))"
    )
    env = dict(os.environ, **{DATASETS_ENV: f"{name}={json_file}:{images}"})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2"


def test_train_net_setup_registers_the_dataset_option(tmp_path):
    import train_net

    json_file, images = write_coco(str(tmp_path), num_images=2)
    name = _name("setup")
    args = train_net.parse_args(
        [
            "--config-file",
            f"{CONFIGS}/tiny_base.yaml",
            "OUTPUT_DIR",
            str(tmp_path / "o"),
            "DATASETS.TRAIN",
            f"('{name}',)",
            "MODEL.ROI_HEADS.NUM_CLASSES",
            "2",
            "DATASETS.TEST",
            "()",
            "--dataset",
            f"{name}={json_file}:{images}",
        ]
    )
    cfg = train_net.setup(args)
    assert cfg.DATASETS.TRAIN == (name,) and len(DatasetCatalog.get(name)) == 2


def test_a_json_detectron2_cannot_load_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"images": [')
    name = _name("broken")
    register_coco_dataset(name, str(bad))
    with pytest.raises(DatasetSpecError, match=rf"'{name}': cannot load .*broken.json: JSONDecodeError"):
        DatasetCatalog.get(name)


def test_visualize_masks_takes_a_spec(tmp_path):
    from coco_files import load_tool

    json_file, images = write_coco(str(tmp_path / "data"), num_images=2)
    name = _name("vis")
    written = load_tool("visualize_masks").main(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.yaml",
            "--dataset",
            f"{name}={json_file}:{images}",
            "--num-images",
            "2",
            "--output",
            str(tmp_path / "vis"),
        ]
    )
    assert sorted(os.path.basename(p) for p in written) == ["img_000_masks.png", "img_001_masks.png"]


def test_lazy_train_net_names_datasets_and_checks_classes(tmp_path):
    from detectron2.engine import default_argument_parser

    import lazy_train_net
    from defeat.data.checks import DataCheckError

    json_file, images = write_coco(str(tmp_path / "data"), num_images=2)
    name = _name("lazy")
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            f"{CONFIGS}/tiny_base.py",
            f"train.output_dir={tmp_path / 'out'}",
            f"dataloader.train.dataset.names={name}",
            f"dataloader.test.dataset.names={name}",
        ]
    )
    args.dataset = [f"{name}={json_file}:{images}"]
    with pytest.raises(DataCheckError, match=rf"'{name}' has 2 categories.*10 classes \(model.roi_heads.num_classes\)"):
        lazy_train_net.main(args)


def test_specs_checked_without_registering(tmp_path):
    """``check_dataset_specs`` (a command's checks before its heavy imports): the refusals of
    ``setup_datasets`` that need no Detectron2, in its order (the variable's specs first, named
    as such), and nothing registered."""
    from defeat.data.datasets import NAMED_DATASETS_ENV, DatasetsVariableError, check_dataset_specs

    json_file, images = write_coco(str(tmp_path), num_images=1)
    name = _name()
    good = f"{name}={json_file}:{images}"
    assert [s.name for s in check_dataset_specs([good], environ={})] == [name]
    assert name not in DatasetCatalog.list()
    with pytest.raises(DatasetSpecError, match=rf"'{name}': image folder not found: .*pics"):
        check_dataset_specs([f"{name}={json_file}:{tmp_path / 'pics'}"], environ={})
    with pytest.raises(DatasetSpecError, match="cannot read dataset spec 'nope'"):
        check_dataset_specs(["nope"], environ={})
    bad_env = {NAMED_DATASETS_ENV: f"e={tmp_path / 'nope.json'}"}
    with pytest.raises(DatasetsVariableError, match=rf"variable {NAMED_DATASETS_ENV}=.*annotation file not"):
        check_dataset_specs([f"{name}={json_file}:{tmp_path / 'pics'}"], environ=bad_env)  # the variable first
    assert [s.name for s in check_dataset_specs([good], environ=bad_env, environment=False)] == [name]
