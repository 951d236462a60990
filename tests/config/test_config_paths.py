"""Teacher paths as Detectron2 resolves _BASE_: beside the config that sets them, then the cwd;
``~`` and ``$VARS`` expanded the same way in the existence check and in the loader."""

import os
import shutil

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from helpers import CONFIGS, make_cfg

from defeat import TeacherLoadError, add_defeat_config
from defeat.config import merge_defeat_config_file


def _load(config_file, *opts):
    cfg = get_cfg()
    add_defeat_config(cfg)
    return merge_defeat_config_file(cfg, str(config_file), opts)


def _student(path, base, teacher=None):
    text = f'_BASE_: "{base}"\n'
    if teacher is not None:
        text += f'MODEL:\n  DEFEAT:\n    TEACHER:\n      CONFIG_FILE: "{teacher}"\n'
    path.write_text(text)
    return path


@pytest.fixture
def layout(tmp_path):
    """project/configs/{teacher.yaml, base/defeat_base.yaml, student.yaml}: a user's own config tree."""
    root = tmp_path / "project" / "configs"
    (root / "base").mkdir(parents=True)
    shutil.copy(f"{CONFIGS}/tiny_teacher.yaml", root / "teacher.yaml")
    (root / "teacher.yaml").write_text(
        (root / "teacher.yaml").read_text().replace('"tiny_base.yaml"', f'"{CONFIGS}/tiny_base.yaml"')
    )
    return root


def test_relative_to_the_config_file_that_sets_it(layout, tmp_path):
    student = _student(layout / "student.yaml", f"{CONFIGS}/tiny_defeat.yaml", "teacher.yaml")
    assert _load(student).MODEL.DEFEAT.TEACHER.CONFIG_FILE == str(layout / "teacher.yaml")
    # Set in a base file two folders away: relative to that base, not to the top file.
    _student(layout / "base" / "defeat_base.yaml", f"{CONFIGS}/tiny_defeat.yaml", "../teacher.yaml")
    student = _student(tmp_path / "student_elsewhere.yaml", str(layout / "base" / "defeat_base.yaml"))
    assert _load(student).MODEL.DEFEAT.TEACHER.CONFIG_FILE == str(layout / "base" / ".." / "teacher.yaml")
    # A top file that sets it wins over its base (as in the merge).
    top = _student(layout / "base" / "top.yaml", "defeat_base.yaml", "../base/../teacher.yaml")
    assert _load(top).MODEL.DEFEAT.TEACHER.CONFIG_FILE == str(layout / "base" / "../base/../teacher.yaml")


def test_falls_back_to_the_working_directory_and_overrides_are_cwd_relative(layout, monkeypatch):
    # The repository's own configs name teachers relative to the repository root (the cwd).
    assert make_cfg(f"{CONFIGS}/tiny_defeat.yaml").MODEL.DEFEAT.TEACHER.CONFIG_FILE == "tests/configs/tiny_teacher.yaml"
    assert _load(f"{CONFIGS}/tiny_defeat.yaml").MODEL.DEFEAT.TEACHER.CONFIG_FILE == "tests/configs/tiny_teacher.yaml"
    student = _student(layout / "student.yaml", f"{CONFIGS}/tiny_defeat.yaml", "teacher.yaml")
    cfg = _load(student, "MODEL.DEFEAT.TEACHER.CONFIG_FILE", "other.yaml")  # a command-line override
    assert cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE == "other.yaml"


def test_home_and_variables_expanded_in_check_and_loader(layout, teacher_weights, tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "w").mkdir(parents=True)
    shutil.copy(teacher_weights, home / "w" / "t.pth")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TEACHERS", str(layout))
    cfg = _load(
        f"{CONFIGS}/tiny_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        "$TEACHERS/teacher.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        "~/w/t.pth",
    )
    model = build_model(cfg)  # check and load both see the expanded paths
    assert not model.teacher.training
    cfg = _load(f"{CONFIGS}/tiny_defeat.yaml", "MODEL.DEFEAT.TEACHER.WEIGHTS", "~/w/missing.pth")
    with pytest.raises(
        TeacherLoadError, match=rf"weights not found: '~/w/missing.pth' \(expanded to '{home}/w/missing.pth'\)"
    ):
        build_model(cfg)
    cfg = _load(
        f"{CONFIGS}/tiny_defeat.yaml",
        "MODEL.DEFEAT.TEACHER.CONFIG_FILE",
        "$TEACHERS/nope.yaml",
        "MODEL.DEFEAT.TEACHER.WEIGHTS",
        "~/w/t.pth",
    )
    with pytest.raises(
        TeacherLoadError, match=rf"config file not found: '\$TEACHERS/nope.yaml' \(expanded to '{layout}/nope.yaml'\)"
    ):
        build_model(cfg)


def test_train_net_resolves_it_and_saves_the_resolved_path(layout, tmp_path):
    import train_net

    student = _student(layout / "student.yaml", f"{CONFIGS}/tiny_defeat.yaml", "teacher.yaml")
    cfg = train_net.setup(train_net.parse_args(["--config-file", str(student), "OUTPUT_DIR", str(tmp_path / "o")]))
    assert cfg.MODEL.DEFEAT.TEACHER.CONFIG_FILE == str(layout / "teacher.yaml")
    saved = make_cfg(str(tmp_path / "o" / "config.yaml"))  # --eval-only from the run's config works anywhere
    assert saved.MODEL.DEFEAT.TEACHER.CONFIG_FILE == str(layout / "teacher.yaml")
    assert os.path.isabs(saved.MODEL.DEFEAT.TEACHER.CONFIG_FILE)
