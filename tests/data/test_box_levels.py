"""``MODEL.DEFEAT.NECK.SCALE_BASE: auto``: the number the inspector suggests, computed here
independently from the box sizes; its log line, the YAML and LazyConfig paths, DDP, a resumed
run's recorded number, and the refusals."""

import logging
import math
import re
from argparse import Namespace
from statistics import NormalDist

import pytest
from coco_files import load_tool, write_coco
from detectron2.data import DatasetCatalog
from helpers import CONFIGS, defeat_cfg, lazy_cfg

from defeat.config.files import defeat_settings, load_config
from defeat.data import box_levels
from defeat.data.box_levels import AUTO, auto_scale_base_pending, resolve_scale_base
from defeat.data.datasets import register_coco_dataset
from defeat.errors import DataCheckError, DeFeatConfigError

IMAGE = 128  # the json's images; the tiny configs resize them to 64 px at test time (MIN/MAX_SIZE_TEST 64)
SIDES = [6, 9, 14, 20, 26, 34, 44, 60, 80, 110]  # box sides in the json's pixels, one square box each


def _boxes(i):
    s = SIDES[i]
    return [(2, 2, s, s, i % 2)]


@pytest.fixture(scope="module")
def sized_set(tmp_path_factory):
    """A COCO json of 10 images of 128 px, one square box of each side in :data:`SIDES`."""
    json_file, images = write_coco(
        str(tmp_path_factory.mktemp("sized")), num_images=len(SIDES), size=IMAGE, boxes=_boxes
    )
    register_coco_dataset("sized_train", json_file, images)
    return "sized_train"


def reference_scale_base(sides, num_levels):
    """The inspector's rule written out from its description: of the bases 2^(k/16) px (1 to
    4096), the one whose share of boxes per level (floor(log2(side / base)), clamped) is closest
    in L1 to COCO's at 56 (a log-normal through 41 % of boxes below 32 px and 24 % above 96 px on
    480-px images, scaled to 800 px); the middle of the first run of equally close bases, to
    0.1 px, at most the largest side (to 0.01 px)."""
    small, large = 32 * 800 / 480, 96 * 800 / 480
    z41, z75 = NormalDist().inv_cdf(0.41), NormalDist().inv_cdf(0.75)
    sigma = (math.log(large) - math.log(small)) / (z75 - z41)
    coco = NormalDist(math.log(small) - z41 * sigma, sigma)
    edges = [coco.cdf(math.log(56 * 2 ** (k + 1))) for k in range(num_levels - 1)]
    target = [b - a for a, b in zip([0.0, *edges], [*edges, 1.0])]
    dists = []
    for k in range(12 * 16 + 1):
        base = 2 ** (k / 16)
        counts = [0] * num_levels
        for s in sides:
            counts[min(num_levels - 1, max(0, math.floor(math.log2(s / base))))] += 1
        dists.append(sum(abs(c / len(sides) - t) for c, t in zip(counts, target)))
    best = [k for k, d in enumerate(dists) if d <= min(dists) + 1e-9]
    run = [best[0]]
    for k in best[1:]:
        if k != run[-1] + 1:
            break
        run.append(k)
    return min(round(2 ** (run[len(run) // 2] / 16), 1), round(max(sides), 2))


def _auto_yaml(teacher_weights, *opts):
    return defeat_cfg(
        teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "DATASETS.TRAIN", "('sized_train',)", *opts
    )


def test_auto_is_the_suggestion_of_the_resized_boxes_and_logs_it(sized_set, teacher_weights, caplog):
    cfg = _auto_yaml(teacher_weights)
    cfg.freeze()  # as train_net.py holds it
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == AUTO and auto_scale_base_pending(cfg)
    expected = reference_scale_base([s * 64 / IMAGE for s in SIDES], 5)
    assert expected < max(SIDES) * 64 / IMAGE  # a real choice, not the cap
    with caplog.at_level(logging.INFO, logger="defeat.data.box_levels"):
        choice = resolve_scale_base(cfg)
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == pytest.approx(expected) == choice.value
    assert isinstance(cfg.MODEL.DEFEAT.NECK.SCALE_BASE, float) and cfg.is_frozen()
    assert not auto_scale_base_pending(cfg) and resolve_scale_base(cfg) is None  # once
    lines = [r.getMessage() for r in caplog.records if r.name == "defeat.data.box_levels"]
    assert len(lines) == 1
    assert lines[0].startswith(f"MODEL.DEFEAT.NECK.SCALE_BASE auto -> {expected:g}: ")
    for part in ("10 boxes of sized_train (10 images", "short side 64, long side <= 64", "the 5 levels"):
        assert part in lines[0], lines[0]
    assert f"L1 distance {choice.distance:.3f}" in lines[0]
    # over the levels of NECK.IN_FEATURES: three levels take another base here
    three = _auto_yaml(teacher_weights, "MODEL.DEFEAT.NECK.IN_FEATURES", "['p2', 'p3', 'p4']")
    assert resolve_scale_base(three).value == reference_scale_base([s * 64 / IMAGE for s in SIDES], 3) != expected
    assert reference_scale_base([s * 64 / IMAGE for s in SIDES], 4) != three.MODEL.DEFEAT.NECK.SCALE_BASE


def test_auto_is_what_the_inspector_suggests_and_the_inspector_reads_auto(sized_set, teacher_weights, capsys, tmp_path):
    tool = load_tool("inspect_dataset")
    fixed = [f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "sized_train", "--output", str(tmp_path / "a.png")]
    tool.main(["--config-file", *fixed])
    suggested = float(re.search(r"suggested SCALE_BASE: ([0-9.]+)", capsys.readouterr().out).group(1))
    cfg = _auto_yaml(teacher_weights)
    assert resolve_scale_base(cfg).value == suggested
    auto = ["--config-file", f"{CONFIGS}/tiny_defeat.yaml", "--dataset", "sized_train"]
    tool.main([*auto, "--output", str(tmp_path / "b.png"), "MODEL.DEFEAT.NECK.SCALE_BASE", "auto"])
    text = capsys.readouterr().out
    assert f"SCALE_BASE {suggested:g} (auto)" in text and "auto takes it when a training run starts" in text


def test_lazyconfig_auto_resolves_to_the_same_number(sized_set, teacher_weights):
    yaml = _auto_yaml(teacher_weights)
    lazy = lazy_cfg(
        f"{CONFIGS}/tiny_defeat.py",
        f"model.teacher.weights={teacher_weights}",
        "model.defeat.neck.scale_base=auto",
        "dataloader.train.dataset.names=sized_train",
    )
    assert lazy.model.defeat.neck.scale_base == AUTO
    assert resolve_scale_base(lazy).value == resolve_scale_base(yaml).value
    assert lazy.model.defeat.neck.scale_base == yaml.MODEL.DEFEAT.NECK.SCALE_BASE
    assert defeat_settings(lazy)["neck"]["scale_base"] == yaml.MODEL.DEFEAT.NECK.SCALE_BASE


def test_other_processes_take_the_main_process_number_without_reading_data(monkeypatch, teacher_weights):
    import detectron2.utils.comm as comm

    cfg = defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "DATASETS.TRAIN", "('nowhere',)")
    main = box_levels.ScaleBaseChoice(23.4, 0.1, 5, 3, ("nowhere",), 64, 64, 5)
    sent = []
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(comm, "all_gather", lambda obj: sent.append(obj) or [main, obj])
    monkeypatch.setattr(box_levels, "choose_scale_base", lambda *a: pytest.fail("a worker read the data"))
    assert resolve_scale_base(cfg) is main and sent == [None]
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == 23.4


def test_a_resumed_run_takes_the_recorded_number_without_reading_data(tmp_path, teacher_weights, monkeypatch, caplog):
    from defeat.engine.script import resolve_data_settings

    out = tmp_path / "run"
    out.mkdir()
    (out / "last_checkpoint").write_text("model_0000001.pth")
    (out / "config.yaml").write_text("VERSION: 2\nMODEL:\n  DEFEAT:\n    NECK:\n      SCALE_BASE: 31.7\n")
    monkeypatch.setattr(DatasetCatalog, "get", lambda *a: pytest.fail("the data was read again"))
    cfg = defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "OUTPUT_DIR", str(out))
    with caplog.at_level(logging.INFO, logger="defeat.data.box_levels"):
        choice = resolve_data_settings(cfg, Namespace(resume=True, eval_only=False))
        assert not [r for r in caplog.records if r.name == "defeat.data.box_levels"]  # the script logs it later
        choice.log()
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == 31.7 == choice.value
    assert f"read from {out / 'config.yaml'} (the training data is not read again)" in caplog.text
    # without --resume the recorded number is not used: the data is read (refused here)
    cfg = defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "OUTPUT_DIR", str(out))
    with pytest.raises(pytest.fail.Exception, match="the data was read again"):
        resolve_data_settings(cfg, Namespace(resume=False, eval_only=False))
    resolve_data_settings(cfg, Namespace(resume=False, eval_only=True))  # an evaluation leaves it alone
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == AUTO


def test_a_training_set_without_boxes_is_refused(tmp_path, teacher_weights):
    json_file, images = write_coco(str(tmp_path / "empty"), num_images=2, boxes=lambda i: [])
    register_coco_dataset("boxless_train", json_file, images)
    cfg = defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "DATASETS.TRAIN", "('boxless_train',)")
    with pytest.raises(DataCheckError, match=r"SCALE_BASE = 'auto' .*boxless_train hold no box .*give a number"):
        resolve_scale_base(cfg)
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == AUTO


def test_auto_that_cannot_act(teacher_weights, caplog):
    """With MASK_ASSIGN other than scale, refused (YAML and LazyConfig); with the neck loss off,
    a warning, left as it is, and the model builds; a model built from an unresolved auto is
    refused with what to do."""
    from detectron2.modeling import build_model

    for opts in (["MODEL.DEFEAT.NECK.MASK_ASSIGN", "all"], ["MODEL.DEFEAT.NECK.MASK_ASSIGN", "coupled"]):
        with pytest.raises(DeFeatConfigError, match=r"SCALE_BASE = 'auto' cannot take effect: NECK.MASK_ASSIGN"):
            build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", *opts))
    with pytest.raises(DeFeatConfigError, match="cannot take effect"):
        lazy_cfg(
            f"{CONFIGS}/tiny_defeat.py",
            f"model.teacher.weights={teacher_weights}",
            "model.defeat.neck.scale_base=auto",
            "model.defeat.neck.mask_assign=all",
        )
    off = defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto", "MODEL.DEFEAT.NECK.ENABLED", "False")
    assert not auto_scale_base_pending(off) and resolve_scale_base(off) is None
    with caplog.at_level(logging.WARNING, logger="defeat.config.validation"):
        build_model(off)
    assert "MODEL.DEFEAT.NECK.SCALE_BASE = 'auto' has no effect" in caplog.text
    with pytest.raises(DeFeatConfigError, match=r"computed from the training set when a training run starts"):
        build_model(defeat_cfg(teacher_weights, "MODEL.DEFEAT.NECK.SCALE_BASE", "auto"))


def test_yaml_files_and_overrides_take_auto_or_a_number(tmp_path):
    """The loader takes ``auto`` from a file (a saved config.yaml with the neck off holds it) and
    from an override; a whole number becomes a float; any other word is refused by the gate."""
    f = tmp_path / "c.yaml"
    f.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nMODEL:\n  DEFEAT:\n    NECK:\n      SCALE_BASE: auto\n')
    assert load_config(str(f)).MODEL.DEFEAT.NECK.SCALE_BASE == AUTO
    cfg = load_config(str(f), ["MODEL.DEFEAT.NECK.SCALE_BASE", "40"])
    assert cfg.MODEL.DEFEAT.NECK.SCALE_BASE == 40.0 and isinstance(cfg.MODEL.DEFEAT.NECK.SCALE_BASE, float)
    f.write_text(f'_BASE_: "{CONFIGS}/tiny_defeat.yaml"\nMODEL:\n  DEFEAT:\n    NECK:\n      SCALE_BASE: 24\n')
    assert load_config(str(f)).MODEL.DEFEAT.NECK.SCALE_BASE == 24.0
    assert load_config(f"{CONFIGS}/tiny_defeat.yaml").MODEL.DEFEAT.NECK.SCALE_BASE == 8.0  # the file's, kept
    cfg = load_config(f"{CONFIGS}/tiny_defeat.yaml", ["MODEL.DEFEAT.NECK.SCALE_BASE", "aut"])
    with pytest.raises(DeFeatConfigError, match=r"SCALE_BASE = 'aut' must be a number or 'auto', not str"):
        from defeat.config.settings import settings_from_cfg
        from defeat.config.validation import validate_settings

        validate_settings(settings_from_cfg(cfg))


def test_datasets_are_read_by_name(sized_set, teacher_weights, monkeypatch):
    """Without dicts given, the main process reads the config's training sets from the catalog."""
    read = []
    real = DatasetCatalog.get
    monkeypatch.setattr(DatasetCatalog, "get", lambda name: read.append(name) or real(name))
    resolve_scale_base(_auto_yaml(teacher_weights))
    assert read == ["sized_train"]


def test_a_base_above_every_box_is_capped_at_the_largest_side():
    """Boxes all of one size sit on the first level for every base above half their side: of that
    flat stretch the rule would take its middle (far above the boxes); it takes the largest side,
    which puts them on the same level."""
    import torch

    images = [
        box_levels.ResizedImage(64, 64, torch.tensor([[0.0, 0.0, 6.0, 6.0]], dtype=torch.float64), torch.zeros(1))
        for _ in range(3)
    ]
    base, _ = box_levels.suggest_scale_base(images, 5)
    assert base == reference_scale_base([6.0] * 3, 5) == 6.0
    assert box_levels.level_shares(images, 5, base).tolist() == box_levels.level_shares(images, 5, 100.0).tolist()
