"""A pip user gets what they need: sdist -> wheel -> install, with the configs in the package."""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from helpers import REPO

from defeat.config.files import ConfigFileError, get_config_file

BASE_CONFIGS = ["Base-DeFeat-RCNN-FPN.yaml", "Base-DeFeat-RetinaNet.yaml", "Base-RCNN-FPN.yaml", "Base-RetinaNet.yaml"]
IGNORE = shutil.ignore_patterns(".git", ".venv", "output", "datasets", "build", "dist", "__pycache__", "*.egg-info")


def _run(cmd, cwd, **env):
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env={**os.environ, "PIP_NO_INDEX": "1", **env},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=180,
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}"
    return proc.stdout


def test_get_config_file_in_a_checkout():
    path = get_config_file("Base-DeFeat-RCNN-FPN.yaml")
    assert os.path.samefile(path, os.path.join(REPO, "configs", "Base-DeFeat-RCNN-FPN.yaml"))
    with pytest.raises(ConfigFileError, match="'nope.yaml' is not one of DeFeat's bundled configs"):
        get_config_file("nope.yaml")
    with pytest.raises(ConfigFileError, match="not one of"):  # nothing outside the configs folder
        get_config_file("../README.md")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The source distribution, built (offline) from a copy of the working tree."""
    tmp = tmp_path_factory.mktemp("pkg")
    shutil.copytree(REPO, tmp / "src", ignore=IGNORE)
    _run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(tmp / 'sdist')!r})"],
        cwd=tmp / "src",
        PYTHONPATH="",
    )
    (path,) = glob.glob(str(tmp / "sdist" / "*.tar.gz"))
    return path


@pytest.mark.heavy(seconds=15)
def test_sdist_carries_the_tests_and_configs(sdist):
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    needed = [
        "LICENSE",
        "MANIFEST.in",
        "setup.py",
        "train_net.py",
        "lazy_train_net.py",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/configs/tiny_base.yaml",
        "tests/configs/tiny_base.py",
        "tools/export_student.py",
        "examples/custom_rcnn.py",
        "benchmarks/accuracy.py",
        "configs/lazy/demo_student_slimR18.py",
        "configs/COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml",
    ]
    needed += [f"configs/{c}" for c in BASE_CONFIGS]
    assert [n for n in needed if n not in names] == []
    assert not any(n.startswith(("build/", "dist/", "output/")) or "__pycache__" in n for n in names)


@pytest.mark.heavy(seconds=15)
def test_wheel_from_the_sdist_installs_with_its_configs(sdist, tmp_path):
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked")
    (src,) = glob.glob(str(tmp_path / "unpacked" / "*"))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "wheel"),
            src,
        ],
        cwd=tmp_path,
        PYTHONPATH="",
    )
    (wheel,) = glob.glob(str(tmp_path / "wheel" / "*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"defeat/configs/{c}" for c in BASE_CONFIGS} <= names
    assert "defeat/configs/COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml" in names
    assert "defeat/configs/lazy/demo_student_slimR18.py" in names and "defeat/config/files.py" in names
    assert not any(n.startswith("tests/") for n in names)

    site = tmp_path / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), wheel],
        cwd=tmp_path,
        PYTHONPATH="",
    )
    probe = (
        "import os, defeat\n"
        "from detectron2.config import LazyConfig, get_cfg\n"
        "print('PROBE', os.path.dirname(defeat.__file__))\n"
        "print('PROBE', defeat.get_config_file('Base-DeFeat-RCNN-FPN.yaml'))\n"
        "cfg = get_cfg(); defeat.add_defeat_config(cfg)\n"
        "cfg.merge_from_file(defeat.get_config_file('COCO-Detection/defeat_R50_FPN_1x_from_R101_FPN_3x.yaml'))\n"
        "print('PROBE', cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.DEFEAT.NECK.BG_WEIGHT, cfg.MODEL.RPN.IN_FEATURES)\n"
        "lazy = LazyConfig.load(defeat.get_config_file('lazy/demo_student_slimR18.py'))\n"
        "print('PROBE', lazy.model.roi_heads.num_classes)\n"
    )
    # cwd outside the repository and PYTHONPATH = the install only: nothing comes from the checkout
    log = _run([sys.executable, "-c", probe], cwd=tmp_path, PYTHONPATH=str(site))
    out = [line[len("PROBE ") :] for line in log.splitlines() if line.startswith("PROBE ")]
    assert out[0] == str(site / "defeat")
    assert out[1] == str(site / "defeat" / "configs" / "Base-DeFeat-RCNN-FPN.yaml")
    assert out[2] == "DeFeatRCNN 16.0 ['p2', 'p3', 'p4', 'p5', 'p6']"  # _BASE_ chain inside the package
    assert out[3] == "10"
