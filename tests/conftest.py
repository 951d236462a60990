"""Fixtures (a saved random teacher, the tiny dataset, the quiet logs and the working folder of
every test) and the order of the test files; shared helpers are in ``helpers.py``."""

import os

import pytest
import torch
from helpers import CONFIGS, REPO, make_cfg, order_by_heavy_seconds, save_weights

import defeat  # noqa: F401  (the models registered before any test builds one)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: each worker, and the scripts its tests
    # start, on one thread (two one-thread processes beat one two-thread process on 2 cores).
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The files whose ``heavy`` tests take longest first (``helpers.order_by_heavy_seconds``)."""
    order_by_heavy_seconds(items)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Config paths inside configs are relative to the repository root, as for users."""
    monkeypatch.chdir(REPO)


@pytest.fixture(autouse=True)
def _known_warnings_hidden():
    """As in every script, the pinned stack's known-harmless warnings are hidden (pytest resets
    the warning filters for each test; ``DEFEAT_SHOW_ALL_WARNINGS=1`` shows them)."""
    from defeat.engine import quiet

    quiet.install()


@pytest.fixture(autouse=True)
def _no_exported_datasets(monkeypatch):
    """Scripts export the datasets they name to $DEFEAT_COCO_DATASETS: start each test without
    any, and undo what a test exported (monkeypatch restores the variable afterwards)."""
    monkeypatch.setenv("DEFEAT_COCO_DATASETS", "")


@pytest.fixture(scope="session")
def teacher_weights(tmp_path_factory):
    """Path of a randomly initialised tiny teacher saved with DetectionCheckpointer."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    model = build_model(make_cfg(os.path.join(CONFIGS, "tiny_teacher.yaml")))
    # Non-trivial BN statistics, so that "teacher BN never updates" is a meaningful check.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    out = tmp_path_factory.mktemp("teacher")
    DetectionCheckpointer(model, str(out)).save("model_final")
    return str(out / "model_final.pth")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """The demo generator's tiny set (16 train / 6 val images of 64 px) registered as ``TINY``."""
    from defeat.demo.data import register_demo_dataset

    root = tmp_path_factory.mktemp("data") / "tiny"
    return register_demo_dataset(str(root), name_prefix="tiny_shapes", num_train=16, num_val=6, image_size=64)


@pytest.fixture(scope="module")
def retina_teacher(tmp_path_factory):
    """A random tiny RetinaNet teacher (FPN 48) saved with DetectionCheckpointer."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    return save_weights(
        build_model(make_cfg(f"{CONFIGS}/tiny_retinanet_teacher.yaml")), tmp_path_factory.mktemp("rt"), "t"
    )
