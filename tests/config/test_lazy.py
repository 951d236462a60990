"""DeFeat from LazyConfig (.py) configs: same model and losses as YAML, teacher checks, lazy_train_net.py."""

import json
import math
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from helpers import CONFIGS, REPO, defeat_cfg, lazy_defeat, make_cfg, metrics_rows, synthetic_batch

from defeat import DeFeatConfigError, DeFeatRCNN, TeacherLoadError, build_teacher
from defeat.config.settings import resolve_settings, settings_from_cfg
from defeat.modeling.teacher import load_teacher_lazy_config

LAZY = os.path.join(REPO, "configs", "lazy")
TINY = ("tiny_lazy_train", "tiny_lazy_val")
DEFEAT_KEYS = {"loss_defeat_neck_obj", "loss_defeat_neck_bg", "loss_defeat_head_obj", "loss_defeat_head_bg"}


def _losses(model, batch, iteration):
    torch.manual_seed(0)  # RPN/ROI sampling is random
    with EventStorage(iteration):
        return model(batch)


# YAML opts and the LazyConfig overrides that mean the same.
SETTINGS = {
    "defaults": ([], []),
    "overridden": (
        [
            "MODEL.DEFEAT.NECK.BG_WEIGHT",
            8.0,
            "MODEL.DEFEAT.HEAD.PROPOSALS",
            "student",
            "MODEL.DEFEAT.HEAD.TEMPERATURE",
            2.0,
            "MODEL.DEFEAT.LOSS_SCHEDULE",
            "linear",
        ],
        [
            "model.defeat.neck.bg_weight=8",
            "model.defeat.head.proposals=student",
            "model.defeat.head.temperature=2.0",
            "model.defeat.loss_schedule=linear",
        ],
    ),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_lazy_model_gives_the_yaml_models_losses(teacher_weights, name):
    yaml_opts, overrides = SETTINGS[name]
    torch.manual_seed(0)
    yaml_model = build_model(defeat_cfg(teacher_weights, *yaml_opts)).train()
    torch.manual_seed(1)  # another initialisation: the state_dict copy below must make them equal
    lazy_model = lazy_defeat(teacher_weights, *overrides).train()
    assert type(lazy_model) is DeFeatRCNN
    assert not any(k.startswith("teacher") for k in lazy_model.state_dict())
    assert all(not p.requires_grad for p in lazy_model.teacher.parameters()) and not lazy_model.teacher.training

    incompatible = lazy_model.load_state_dict(yaml_model.state_dict(), strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    batch = synthetic_batch(boxes_per_image=(3, 1))
    expected = _losses(yaml_model, batch, iteration=2)  # mid-schedule: linear decay and max_iter matter
    got = _losses(lazy_model, batch, iteration=2)
    assert set(got) == set(expected) and DEFEAT_KEYS <= set(got)
    for key in expected:
        assert torch.allclose(got[key], expected[key], rtol=1e-5, atol=1e-7), (key, got[key], expected[key])
    assert lazy_model.distiller.neck_weights[1] == (8.0 if name == "overridden" else 4.0)


def test_lazy_settings_of_demo_and_recipe_configs_match_their_yaml_twins():
    pairs = [
        ("demo_defeat_slimR18_from_R18.py", "configs/demo/defeat_slimR18_from_R18.yaml"),
        ("defeat_mask_rcnn_R_50_FPN_100ep_LSJ_from_R101.py", None),
    ]
    demo = LazyConfig.load(os.path.join(LAZY, pairs[0][0]))
    assert resolve_settings(demo.model.defeat) == settings_from_cfg(make_cfg(pairs[0][1]))
    assert demo.train.device == "cpu"

    coco = LazyConfig.load(os.path.join(LAZY, pairs[1][0]))
    settings = resolve_settings(coco.model.defeat)
    assert settings["neck"]["obj_weight"] == 4.0 and settings["neck"]["bg_weight"] == 16.0
    assert settings["max_iter"] == coco.train.max_iter == 184375
    # The student part is Detectron2's new-baseline R50 config, untouched.
    from detectron2.model_zoo import get_config

    plain = get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py").model
    assert set(coco.model) - {"teacher", "defeat"} == set(plain)
    assert coco.model.backbone == plain.backbone and coco.model.proposal_generator == plain.proposal_generator
    teacher = load_teacher_lazy_config(coco.model.teacher.config_file)
    assert teacher.model.backbone.bottom_up.stages.depth == 101


def test_demo_lazy_student_has_the_yaml_students_tensors():
    lazy = instantiate(LazyConfig.load(os.path.join(LAZY, "demo_student_slimR18.py")).model)
    yaml = build_model(make_cfg("configs/demo/student_slimR18.yaml"))
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (lazy, yaml)]
    assert shapes[0] == shapes[1]


def test_unknown_lazy_setting_is_an_error(teacher_weights):
    with pytest.raises(DeFeatConfigError, match=r"unknown DeFeat setting model\.defeat\.neck\.bg_wieght"):
        lazy_defeat(teacher_weights, "model.defeat.neck.bg_wieght=8")


def test_lazy_setting_errors_are_the_yaml_errors(teacher_weights):
    with pytest.raises(DeFeatConfigError, match="NECK.ADAPTER = 'conv5x5' is not supported"):
        lazy_defeat(teacher_weights, "model.defeat.neck.adapter=conv5x5")
    with pytest.raises(DeFeatConfigError, match="HEAD.PROPOSALS = 'both' is not supported"):
        lazy_defeat(teacher_weights, "model.defeat.head.proposals=both")


# ---- the teacher from a LazyConfig file: same loading, freezing and errors as from YAML ----

KINDS = ["yaml", "py"]


def _teacher_config(kind):
    return f"{CONFIGS}/tiny_teacher.{kind}"


def test_lazy_teacher_loads_every_tensor_and_is_frozen(teacher_weights):
    t = build_teacher(_teacher_config("py"), teacher_weights, "cpu")
    saved = torch.load(teacher_weights, map_location="cpu", weights_only=False)["model"]
    state = t.state_dict()
    assert set(state) == set(saved) and all(torch.equal(state[k], saved[k]) for k in state)
    assert not t.training and all(not p.requires_grad for p in t.parameters())
    assert t.backbone.output_shape()["p2"].channels == 48


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_errors_are_the_same_for_both_config_kinds(teacher_weights, kind, tmp_path):
    with pytest.raises(TeacherLoadError, match=r"teacher config file not found.*nope\." + kind):
        build_teacher(f"nope.{kind}", teacher_weights)
    with pytest.raises(TeacherLoadError, match=r"teacher weights not found.*missing\.pth"):
        build_teacher(_teacher_config(kind), "missing.pth")
    with pytest.raises(TeacherLoadError, match="WEIGHTS is empty"):
        build_teacher(_teacher_config(kind), "")
    other = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml"))  # FPN 32 channels, the teacher has 48
    DetectionCheckpointer(other, str(tmp_path)).save("other")
    with pytest.raises(TeacherLoadError, match=r"do not fit.*tensors of another shape.*backbone\.fpn_lateral2\.weight"):
        build_teacher(_teacher_config(kind), str(tmp_path / "other.pth"))
    with pytest.raises(TeacherLoadError, match="is itself a DeFeat config"):
        build_teacher(f"{CONFIGS}/tiny_defeat.{kind}", teacher_weights)


def test_lazy_teacher_config_errors(teacher_weights, tmp_path):
    no_model = tmp_path / "no_model.py"
    no_model.write_text("train = dict(max_iter=1)\n")
    with pytest.raises(TeacherLoadError, match="has no 'model' entry to build"):
        build_teacher(str(no_model), teacher_weights)
    broken = tmp_path / "broken.py"
    broken.write_text("from nowhere_at_all import model\n")
    with pytest.raises(TeacherLoadError, match="cannot load teacher config"):
        build_teacher(str(broken), teacher_weights)


def test_wrong_lazy_teacher_weights_fail_the_model_build(tmp_path):
    other = build_model(make_cfg(f"{CONFIGS}/tiny_base.yaml"))
    DetectionCheckpointer(other, str(tmp_path)).save("other")
    with pytest.raises(TeacherLoadError, match="tensors of another shape"):
        lazy_defeat(str(tmp_path / "other.pth"))


# ---- lazy_train_net.py end to end ----


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    from defeat.demo.data import register_demo_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    return register_demo_dataset(str(root), name_prefix="tiny_lazy", num_train=16, num_val=6, image_size=64)


def _run(config, out, *overrides, eval_only=False, resume=False):
    from detectron2.engine import default_argument_parser

    import lazy_train_net

    argv = ["--config-file", config] + (["--eval-only"] if eval_only else []) + (["--resume"] if resume else [])
    argv += [
        f"train.output_dir={out}",
        f"dataloader.train.dataset.names={TINY[0]}",
        f"dataloader.test.dataset.names={TINY[1]}",
        "model.roi_heads.box_predictor.test_score_thresh=0.0",
        *overrides,
    ]  # untrained: keep low scores
    return lazy_train_net.main(default_argument_parser().parse_args(argv))


def _detections(out):
    with open(os.path.join(out, "inference", "coco_instances_results.json")) as f:
        return json.load(f)


def test_lazy_train_net_defeat_run_resume_and_plain_student_eval(tiny_dataset, teacher_weights, tmp_path):
    out = str(tmp_path / "defeat")
    _run(
        f"{CONFIGS}/tiny_defeat.py",
        out,
        f"model.teacher.weights={teacher_weights}",
        "model.defeat.warmup_iters=2",
        "model.defeat.neck.bg_weight=8",
        "train.log_period=1",
    )

    rows = [r for r in metrics_rows(out) if "loss_defeat_neck_obj" in r]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    for key in DEFEAT_KEYS:
        assert all(math.isfinite(r[key]) for r in rows), key
    assert [r["defeat/kd_weight"] for r in rows] == [0.5, 1.0, 1.0, 1.0]  # warm-up override applied
    # The KD/detection balance of iteration 0 (one value per key: no smoothing), and its one log line.
    kd = sum(v for k, v in rows[0].items() if k.startswith("loss_defeat_"))
    det = sum(v for k, v in rows[0].items() if k.startswith("loss_") and not k.startswith("loss_defeat_"))
    assert rows[0]["[metric]kd_to_det_ratio"] == pytest.approx(kd / det)
    with open(os.path.join(out, "log.txt")) as f:
        assert f.read().count("KD/detection loss balance over the first 4 iterations") == 1
    with open(os.path.join(out, "config.yaml")) as f:
        assert "bg_weight: 8" in f.read()

    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert not any(k.startswith("teacher") for k in ckpt["model"])
    assert any(k.startswith("distiller.adapters.") for k in ckpt["model"])
    assert not [f for f in os.listdir(out) if ".tmp." in f]  # atomic writes left no temporary files

    # --resume continues from model_final (iteration 3) instead of starting again.
    _run(
        f"{CONFIGS}/tiny_defeat.py",
        out,
        f"model.teacher.weights={teacher_weights}",
        "train.max_iter=5",
        "train.log_period=1",
        resume=True,
    )
    assert [r["iteration"] for r in metrics_rows(out) if "loss_defeat_neck_obj" in r] == [0, 1, 2, 3, 4]

    # --eval-only with the plain lazy student config (GeneralizedRCNN): the same detections.
    plain = str(tmp_path / "plain")
    res = _run(f"{CONFIGS}/tiny_base.py", plain, f"train.init_checkpoint={out}/model_final.pth", eval_only=True)
    assert set(res["bbox"]) >= {"AP", "AP50", "AP75"}
    ref = [r for r in metrics_rows(out) if "bbox/AP" in r][-1]["bbox/AP"]
    ap = res["bbox"]["AP"]
    assert (math.isnan(ap) and math.isnan(ref)) or ap == pytest.approx(ref, abs=1e-6)
    assert len(_detections(out)) > 0 and _detections(out) == _detections(plain)


def test_lazy_train_net_checks_dataset_boxes(tmp_path):
    from detectron2.data import DatasetCatalog
    from detectron2.structures import BoxMode

    DatasetCatalog.register(
        "tiny_lazy_bad",
        lambda: [
            {
                "file_name": "x.png",
                "height": 64,
                "width": 64,
                "image_id": 0,
                "annotations": [{"bbox": [10, 10, 5, 30], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}],
            }
        ],
    )
    with pytest.raises(ValueError, match="x2 < x1"):
        _run(f"{CONFIGS}/tiny_base.py", str(tmp_path), "dataloader.train.dataset.names=tiny_lazy_bad")


@pytest.mark.heavy(seconds=40)
def test_lazy_train_net_two_processes_on_cpu(teacher_weights, tmp_path):
    """lazy_train_net.py --num-gpus 2 on the CPU (gloo, CUDA hidden if present): both processes
    end with the same student weights although each read other images."""
    from launch_harness import assert_replicas_in_sync, cpu_env, finish, start

    out = tmp_path / "run"
    env = cpu_env(DEFEAT_DEMO_ROOT=tmp_path / "data", DEFEAT_DEMO_NUM_TRAIN=4, DEFEAT_DEMO_NUM_VAL=2)
    argv = [
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        "--config-file",
        f"{CONFIGS}/tiny_defeat.py",
        f"model.teacher.weights={teacher_weights}",
        "dataloader.train.dataset.names=defeat_demo_train",
        "dataloader.test.dataset.names=defeat_demo_val",
        "train.max_iter=2",
        f"train.output_dir={out}",
    ]
    finish([start("lazy_train_net", argv, str(tmp_path / "w"), env=env)])
    for rank, log in ((0, "log.txt"), (1, "log.txt.rank1")):
        assert f"Rank of current process: {rank}. World size: 2" in (out / log).read_text()
    last = [r for r in metrics_rows(str(out)) if "total_loss" in r][-1]
    assert last["iteration"] == 1 and all(math.isfinite(last[k]) for k in DEFEAT_KEYS)
    saved = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    assert not any(k.startswith(("module.", "teacher")) for k in saved)
    assert_replicas_in_sync(str(tmp_path / "w"))
