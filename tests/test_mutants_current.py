"""tests/mutants.py stays current: every mutant's file, text and tests still exist (no mutation is
run here), and a mutant that no longer fits the sources is reported by the same check."""

import os

import mutants
import pytest
from helpers import REPO

SOURCE = "def f(x):\n    if x < 0:\n        raise ValueError(x)\n    return x\n"
TESTS = """import pytest


def test_negative_refused():
    pass


class TestPositive:
    @pytest.mark.parametrize("value", [1, "two"])
    def test_kept(self, value):
        pass


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_computed_ids(case):
    pass  # ids of CASES such as wide_image
"""
PLAIN = "def test_negative_refused():\n    pass\n\n\ndef test_positive_kept():\n    pass\n"


@pytest.fixture
def repo(tmp_path):
    """A repository with one source file and one test file for fabricated mutants."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "code.py").write_text(SOURCE)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_code.py").write_text(TESTS)
    (tmp_path / "tests" / "test_plain.py").write_text(PLAIN)
    return tmp_path


def _mutant(name="m", path="pkg/code.py", old="    if x < 0:", new="    if False:", tests=("tests/test_code.py",)):
    return mutants.Mutant(name, "negative x refused", path, old, new, tests)


def test_every_mutant_applies_to_the_current_sources():
    assert mutants.problems() == []
    assert len({m.name for m in mutants.MUTANTS}) == len(mutants.MUTANTS)
    for m in mutants.MUTANTS:  # what problems() reads: the files below the repository
        assert os.path.isfile(os.path.join(REPO, m.path)), m.name


def test_a_current_mutant_has_no_problem(repo):
    good = [
        _mutant("plain"),
        _mutant("node", tests=("tests/test_code.py::TestPositive::test_kept",)),
        _mutant("node_param", tests=("tests/test_code.py::TestPositive::test_kept[two]",)),
        _mutant("k_name", tests=("tests/test_code.py", "-k", "negative or (kept and not two)")),
        _mutant("k_param", tests=("tests/test_code.py", "-k", "TWO")),  # case-insensitive, a parametrize value
        _mutant("k_class", tests=("tests/test_code.py", "-k", "Positive")),
        _mutant("k_computed_id", tests=("tests/test_code.py", "-k", "wide_image")),  # found in the file's text
        _mutant("k_plain", tests=("tests/test_plain.py", "-k", "negative and not positive")),
        _mutant("pair", old=("    if x < 0:", "raise ValueError(x)"), new=("    if x < 1:", "return None")),
    ]
    assert mutants.problems(good, repo=str(repo)) == []
    assert mutants.mutate(SOURCE, good[-1]) == "def f(x):\n    if x < 1:\n        return None\n    return x\n"


@pytest.mark.parametrize(
    "mutant, reported",
    [
        (_mutant(path="pkg/moved.py"), "m: pkg/moved.py does not exist"),
        (_mutant(old="    if x <= 0:"), "m: the text to mutate occurs 0 times in pkg/code.py: '    if x <= 0:'"),
        (_mutant(old="x"), "m: the text to mutate occurs 4 times in pkg/code.py"),
        (_mutant(new="    if x < 0:"), "m: its new text equals the old one"),
        (_mutant(old=""), "m: old and new must be texts, old non-empty"),
        (_mutant(old=("    if x < 0:",), new="    if False:"), "m: old and new must both be texts or tuples"),
        (_mutant(old=("    if x < 0:", "    if x < 0:"), new=("    if x < 1:", "x")), "occurs 0 times"),  # in sequence
        (_mutant(tests=("tests/engine/test_code.py",)), "m: test file tests/engine/test_code.py does not exist"),
        (_mutant(tests=("tests/test_code.py::test_gone",)), "m: tests/test_code.py has no test test_gone"),
        (_mutant(tests=("-k", "negative")), "m: its test arguments name no test file"),
        (_mutant(tests=("tests/test_code.py", "-k", "negative or renamed")), "['renamed'] name no test of"),
        (_mutant(tests=("tests/test_plain.py", "-k", "negative and kept")), "selects no test of"),
        (_mutant(tests=("tests/test_code.py", "-k", "negative or (")), "is not an expression of words"),
        (_mutant(tests=("tests/test_code.py", "-k")), "m: -k without an expression"),
    ],
)
def test_a_stale_mutant_is_reported(repo, mutant, reported):
    found = mutants.problems([mutant], repo=str(repo))
    assert len(found) == 1 and reported in found[0], found


def test_the_real_list_reports_a_mutant_left_at_a_moved_file():
    """A mutant as written before checkpoint.py left engine/: reported against this repository."""
    real = next(m for m in mutants.MUTANTS if m.name == "strict_eval_weights")
    stale = real._replace(path="projects/defeat/engine/checkpoint.py", tests=("tests/engine/test_checkpoint.py",))
    assert mutants.problems([real]) == []
    assert mutants.problems([real, stale]) == [
        "strict_eval_weights: two mutants have this name",
        "strict_eval_weights: projects/defeat/engine/checkpoint.py does not exist",
        "strict_eval_weights: test file tests/engine/test_checkpoint.py does not exist",
    ]


def test_check_and_list_report_stale_mutants_without_running_any(repo, monkeypatch, capsys):
    assert mutants.main(["--check"]) == 0
    assert f"all {len(mutants.MUTANTS)} mutants apply" in capsys.readouterr().out
    monkeypatch.setattr(mutants, "REPO", str(repo))
    monkeypatch.setattr(mutants, "MUTANTS", [_mutant("current"), _mutant("rotten", path="pkg/moved.py")])
    assert mutants.main(["--check"]) == 1
    assert capsys.readouterr().out == "rotten: pkg/moved.py does not exist\n"
    assert mutants.main(["--list"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("current ") and lines[1].startswith("STALE rotten ")
    assert lines[2] == "rotten: pkg/moved.py does not exist"


def test_tests_that_select_nothing_do_not_kill_a_mutant(repo):
    """pytest's exit status 5 (nothing collected) is no failing test."""
    (repo / "tests" / "test_fails.py").write_text("def test_fails():\n    assert False\n")
    killed, detail = mutants._run_tests(str(repo), ["tests/test_fails.py"], timeout=120)
    assert killed and "FAILED tests/test_fails.py::test_fails" in detail
    killed, detail = mutants._run_tests(str(repo), ["tests/test_fails.py", "-k", "other"], timeout=120)
    assert not killed and "no test ran (pytest exit status 5)" in detail
