"""The training scripts refuse what would silently go wrong: misspelt or mistyped LazyConfig
overrides, teacher weights demanded by --eval-only, and an unexplained NaN loss."""

import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig
from detectron2.modeling import build_model
from helpers import CONFIGS, defeat_cfg

from defeat import DeFeatConfigError
from defeat.engine.nonfinite import nonfinite_loss_message

# ---- LazyConfig overrides ----


@pytest.mark.parametrize(
    "override, match",
    [
        ("modle.defeat.neck.bg_weight=1", r"'modle' is not in the config \(known keys there: \[.*'model'"),
        ("model.defaet.neck.bg_weight=1", r"'model\.defaet' is not in the config \(known keys there: \[.*'defeat'"),
        ("train.max_itr=5", r"'train\.max_itr' is not in the config.*or write \+train\.max_itr=\.\.\. to add"),
        ("train.max_iter=abc", r"train\.max_iter got 'abc' \(str\); the config's value is 4, so it must be an integer"),
        ("train.max_iter=2.5", r"train\.max_iter got 2\.5 .*must be an integer"),
        ("optimizer.lr=fast", r"optimizer\.lr got 'fast' \(str\).*must be a number"),
        ("train.amp.enabled=yes", r"train\.amp\.enabled got 'yes'.*must be True or False"),
        ("model.roi_heads=3", r"model\.roi_heads got 3 .*must be a mapping"),
        ("model.defeat=null", r"model\.defeat got None .*must be a mapping"),  # would silently mean the defaults
        ("train.max_iter", r"is not of the form key=value"),
        ("train.output_dir=5", r"train\.output_dir got 5 \(int\).*must be text"),
        ("train.device=True", r"train\.device got True \(bool\).*must be text"),
    ],
)
def test_bad_override_is_refused_naming_it(override, match):
    import lazy_train_net

    cfg = LazyConfig.load(f"{CONFIGS}/tiny_defeat.py")
    with pytest.raises(lazy_train_net.OverrideError, match=match):
        lazy_train_net.check_overrides(cfg, [override])


def test_good_overrides_pass():
    import lazy_train_net

    cfg = LazyConfig.load(f"{CONFIGS}/tiny_defeat.py")
    lazy_train_net.check_overrides(
        cfg,
        [
            "train.max_iter=5",
            "model.defeat.neck.bg_weight=8",
            "optimizer.lr=0.02",
            "train.amp.enabled=True",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",  # exists
            "model.roi_heads.box_predictor.new_argument=1",  # a new argument of a LazyCall
            "+train.clip_gradients.enabled=True",
            "+train.new_group.value=3",  # explicitly added
            "model.defeat.max_iter=${train.max_iter}",
            "train.output_dir='5'",  # a number quoted as text
            "train.output_dir=out/run1",
        ],
    )
    # ... and they reach the config that lazy_train_net builds from.
    args = _lazy_args(
        "train.max_iter=5",
        "model.defeat.neck.bg_weight=8",
        "optimizer.lr=0.02",
        "model.roi_heads.box_predictor.test_score_thresh=0.5",
        "+train.new_group.value=3",
        "model.defeat.max_iter=${train.max_iter}",
        "train.output_dir=out/run1",
    )
    cfg = lazy_train_net.load_config(args)
    assert cfg.train.max_iter == 5 and cfg.optimizer.lr == 0.02 and cfg.train.output_dir == "out/run1"
    assert cfg.model.defeat.neck.bg_weight == 8 and cfg.train.new_group.value == 3
    assert cfg.model.roi_heads.box_predictor.test_score_thresh == 0.5
    from defeat.config.settings import resolve_settings

    assert resolve_settings(cfg.model.defeat)["max_iter"] == 5


def _lazy_args(*opts, eval_only=False):
    from detectron2.engine import default_argument_parser

    return default_argument_parser().parse_args(
        ["--config-file", f"{CONFIGS}/tiny_defeat.py"] + (["--eval-only"] if eval_only else []) + list(opts)
    )


def test_misspelt_override_stops_lazy_train_net_before_config_yaml(teacher_weights, tmp_path):
    import lazy_train_net

    out = tmp_path / "run"
    with pytest.raises(lazy_train_net.OverrideError, match="'modle' is not in the config"):
        lazy_train_net.main(
            _lazy_args(
                f"train.output_dir={out}", f"model.teacher.weights={teacher_weights}", "modle.defeat.neck.bg_weight=1"
            )
        )
    assert not (out / "config.yaml").exists()
    with pytest.raises(DeFeatConfigError, match=r"NECK\.OBJ_WEIGHT = 'abc' must be a number"):
        lazy_train_net.main(
            _lazy_args(
                f"train.output_dir={out}",
                f"model.teacher.weights={teacher_weights}",
                "model.defeat.neck.obj_weight=abc",
            )
        )
    assert not (out / "config.yaml").exists()


# ---- --eval-only: the student, without teacher weights or the training set ----


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory):
    from defeat.demo.data import register_demo_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    register_demo_dataset(str(root), name_prefix="tiny_guard", num_train=2, num_val=2, image_size=64)
    return "tiny_guard_val"


@pytest.fixture
def defeat_checkpoint(teacher_weights, tmp_path):
    torch.manual_seed(0)
    model = build_model(defeat_cfg(teacher_weights))
    DetectionCheckpointer(model, str(tmp_path)).save("defeat")
    return str(tmp_path / "defeat.pth")


def test_train_net_eval_only_needs_no_teacher_and_no_demo_training_set(
    defeat_checkpoint, tiny_val, tmp_path, monkeypatch
):
    from detectron2.engine import default_argument_parser

    import train_net

    demo_root = tmp_path / "demo_data"
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", str(demo_root))
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            f"{CONFIGS}/tiny_defeat.yaml",
            "--eval-only",
            "MODEL.DEFEAT.TEACHER.WEIGHTS",
            "never/trained/teacher.pth",
            "MODEL.WEIGHTS",
            defeat_checkpoint,
            "DATASETS.TRAIN",
            "('defeat_demo_train',)",
            "DATASETS.TEST",
            f"('{tiny_val}',)",
            "OUTPUT_DIR",
            str(tmp_path / "eval"),
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "0.0",
        ]
    )
    res = train_net.main(args)
    assert "AP" in res["bbox"]
    assert not demo_root.exists()  # the training split was not generated


def test_lazy_eval_only_needs_no_teacher_and_no_demo_training_set(defeat_checkpoint, tiny_val, tmp_path, monkeypatch):
    import lazy_train_net

    demo_root = tmp_path / "demo_data"
    monkeypatch.setenv("DEFEAT_DEMO_ROOT", str(demo_root))
    res = lazy_train_net.main(
        _lazy_args(
            f"train.output_dir={tmp_path / 'eval'}",
            "model.teacher.weights=never/trained/teacher.pth",
            f"train.init_checkpoint={defeat_checkpoint}",
            "dataloader.train.dataset.names=defeat_demo_train",
            f"dataloader.test.dataset.names={tiny_val}",
            "model.roi_heads.box_predictor.test_score_thresh=0.0",
            eval_only=True,
        )
    )
    assert "AP" in res["bbox"]
    assert not demo_root.exists()


def test_eval_model_is_the_student_with_the_defeat_models_detections(teacher_weights, defeat_checkpoint):
    from helpers import assert_same_detections, synthetic_batch

    from defeat.modeling.meta_arch.common import build_eval_model

    cfg = defeat_cfg("missing.pth", "MODEL.WEIGHTS", defeat_checkpoint)
    student = build_eval_model(cfg)
    assert type(student).__name__ == "GeneralizedRCNN"
    DetectionCheckpointer(student).load(defeat_checkpoint)
    full = build_model(defeat_cfg(teacher_weights))
    DetectionCheckpointer(full).load(defeat_checkpoint)
    batch = [{"image": x["image"], "height": 64, "width": 64} for x in synthetic_batch()]
    with torch.no_grad():
        assert_same_detections(full.eval()(batch), student.eval()(batch))


# ---- a NaN loss says which term went first and what to check ----


def test_nan_from_the_teacher_names_the_defeat_term(teacher_weights, tiny_val, tmp_path):
    import train_net

    cfg = defeat_cfg(
        teacher_weights,
        "DATASETS.TRAIN",
        "('tiny_guard_train',)",
        "DATASETS.TEST",
        "()",
        "OUTPUT_DIR",
        str(tmp_path),
        "SOLVER.MAX_ITER",
        2,
        "MODEL.DEFEAT.HEAD.ENABLED",
        False,
    )
    cfg.freeze()
    trainer = train_net.Trainer(cfg)
    with torch.no_grad():  # a teacher whose outputs are NaN (loaded weights were finite)
        trainer.model.teacher.backbone.fpn_output3.weight.fill_(float("nan"))
    with pytest.raises(
        FloatingPointError,
        match=r"iteration=0: the DeFeat term loss_defeat_neck_(obj|bg) went "
        r"non-finite first.*check that the teacher's outputs are finite",
    ) as e:
        trainer.train()
    assert "Loss became infinite or NaN" in str(e.value.__cause__)  # Detectron2's own error is chained


def test_nonfinite_message_cases():
    nan, inf = torch.tensor(float("nan")), torch.tensor(float("inf"))
    one = torch.tensor(1.0)
    m = nonfinite_loss_message({"loss_cls": inf, "loss_defeat_head_bg": one}, 7)
    assert (
        "iteration=7: the detector loss loss_cls went non-finite first" in m and "DeFeat losses were still finite" in m
    )
    m = nonfinite_loss_message({"loss_cls": nan, "loss_defeat_neck_bg": inf}, 3)
    assert "DeFeat terms ['loss_defeat_neck_bg'] and the detector terms ['loss_cls']" in m
    m = nonfinite_loss_message({"loss_cls": one}, 3)
    assert "another process" in m


def test_student_class_of_every_defeat_family():
    import sys

    from detectron2.modeling import GeneralizedRCNN, RetinaNet
    from helpers import REPO

    from defeat import DeFeatRCNN, DeFeatRetinaNet
    from defeat.modeling.meta_arch.common import student_class

    sys.path.insert(0, os.path.join(REPO, "examples"))
    import custom_rcnn

    assert student_class(DeFeatRCNN) is GeneralizedRCNN
    assert student_class(DeFeatRetinaNet) is RetinaNet
    assert student_class(custom_rcnn.CustomDeFeatRCNN) is GeneralizedRCNN
    assert student_class(GeneralizedRCNN) is GeneralizedRCNN
