"""The pinned stack's known-harmless messages are hidden (exactly those), in every entry point."""

import ast
import glob
import logging
import os
import subprocess
import sys
import warnings

import pytest
from helpers import REPO

from defeat.engine import quiet as kw

# What the pinned stack prints: (message, category, issuing module), as torch/fvcore/setuptools word it.
PINNED_WARNINGS = [
    (
        "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
        FutureWarning,
        "torch.jit._script",
    ),
    (
        "torch.meshgrid: in an upcoming release, it will be required to pass the indexing argument. "
        "(Triggered internally at /pytorch/aten/src/ATen/native/TensorShape.cpp:4221.)",
        UserWarning,
        "torch.functional",
    ),
    (
        "pkg_resources is deprecated as an API. See https://setuptools.pypa.io/en/latest/pkg_resources.html.",
        UserWarning,
        "detectron2.config.lazy",
    ),
]
ENV_ROW = "detectron2._C                    not built correctly: {}"
LIBCUDART = "libcudart.so.12: cannot open shared object file: No such file or directory"


def _warn(message, category, module):
    warnings.warn_explicit(message, category, module.replace(".", "/") + ".py", 1, module=module)


def _shown(calls, environ=None):
    """The messages of ``calls`` (``(message, category, module)``) that reach the user."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        kw.install(environ if environ is not None else {})
        for call in calls:
            _warn(*call)
    return [str(w.message) for w in seen]


def test_the_pinned_warnings_are_hidden_and_every_other_one_shown():
    assert _shown(PINNED_WARNINGS) == []
    others = [
        ("our own deprecation", FutureWarning, "defeat.config.files"),
        # a known text from another module, or of another category, is not the known one
        (PINNED_WARNINGS[0][0], FutureWarning, "defeat.modeling.teacher"),
        (PINNED_WARNINGS[1][0], DeprecationWarning, "torch.functional"),
        ("torch.meshgrid is slow", UserWarning, "torch.functional"),
        ("`torch.jit.trace` is deprecated", FutureWarning, "torch.jit._script"),
    ]
    assert _shown(others) == [o[0] for o in others]
    # DEFEAT_SHOW_ALL_WARNINGS=1: nothing is filtered
    assert _shown(PINNED_WARNINGS, {kw.SHOW_ALL_ENV: "1"}) == [w[0] for w in PINNED_WARNINGS]
    assert kw.filtering_enabled({kw.SHOW_ALL_ENV: "0"}) and not kw.filtering_enabled({kw.SHOW_ALL_ENV: "yes"})


LOGGERS = ("torch.utils.cpp_extension", "torch.fx._symbolic_trace", "defeat.engine.trainer", "detectron2", "d2x")


@pytest.fixture
def log_records():
    """The messages that reach a handler of the loggers in ``LOGGERS``, with the filters installed
    (each logger at DEBUG, not propagating, so every record is seen once; restored afterwards)."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.DEBUG)
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        kw.install({})
        yield records
    finally:
        kw.uninstall()
        for name, (level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


def test_the_pinned_log_lines_are_dropped_and_others_kept(log_records):
    logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr")
    logging.getLogger("torch.fx._symbolic_trace").warning(
        "is_fx_tracing will return true for both fx.symbolic_trace and torch.export. Please use ..."
    )
    kept = [
        ("torch.utils.cpp_extension", "Error checking compiler version for c++"),
        ("torch.fx._symbolic_trace", "something else about tracing"),
        ("defeat.engine.trainer", "No CUDA runtime is found, using CUDA_HOME='/usr'"),  # ours: never hidden
    ]
    for name, message in kept:
        logging.getLogger(name).warning(message)
    assert log_records == [m for _, m in kept]


def test_the_detectron2_C_row_says_what_it_means_and_other_failures_are_unchanged(log_records):
    table = "Environment info:\n{}\nGPU available                    No"
    d2 = logging.getLogger("detectron2")
    d2.info(table.format(ENV_ROW.format(LIBCUDART)))
    abi = ENV_ROW.format("undefined symbol: _ZN3c104cuda9SetDevice")  # a real problem: shown as is
    d2.info(table.format(abi))
    logging.getLogger("d2x").info(ENV_ROW.format(LIBCUDART))  # another logger: untouched
    assert log_records[0] == table.format(
        "detectron2._C                    not loaded (libcudart.so.12 not found): its ops are not used by "
        "DeFeat's models (known-harmless)"
    )
    assert log_records[1:] == [table.format(abi), ENV_ROW.format(LIBCUDART)]


def test_the_announcement_is_one_info_line_once(caplog, monkeypatch):
    monkeypatch.setattr(kw, "_announced", False)
    with caplog.at_level(logging.INFO, logger="defeat"):
        assert kw.announce() and not kw.announce()
    lines = [r for r in caplog.records if r.name == "defeat"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "DEFEAT_SHOW_ALL_WARNINGS=1" in lines[0].getMessage()
    monkeypatch.setattr(kw, "_announced", False)
    monkeypatch.setenv(kw.SHOW_ALL_ENV, "1")
    assert not kw.announce()  # nothing is hidden: nothing to say


ENTRY_POINTS = [
    "train_net.py",
    "lazy_train_net.py",
    "examples/custom_rcnn.py",
    *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "tools", "*.py"))),
    *sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "benchmarks", "*.py"))),
]


def _first_imports(path):
    """Line numbers of the first import of ``defeat`` and of Detectron2/fvcore/torchvision in ``path``."""
    first = {}
    for node in sorted(
        (n for n in ast.walk(ast.parse(open(path).read())) if isinstance(n, (ast.Import, ast.ImportFrom))),
        key=lambda n: n.lineno,
    ):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            top = name.split(".")[0]
            kind = "defeat" if top == "defeat" else "stack" if top in ("detectron2", "fvcore", "torchvision") else None
            if kind:
                first.setdefault(kind, node.lineno)
    return first


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_every_entry_point_imports_defeat_before_detectron2(script):
    first = _first_imports(os.path.join(REPO, script))
    assert "defeat" in first, f"{script} never imports defeat"
    assert first["defeat"] < first.get("stack", float("inf")), f"{script} imports Detectron2 before defeat: {first}"


def test_the_import_order_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom detectron2.config import CfgNode\n\nimport defeat\n")
    first = _first_imports(str(bad))
    assert first == {"stack": 2, "defeat": 4}


@pytest.mark.heavy(seconds=20)
def test_a_tool_prints_none_of_them_unless_asked():
    """The real stack, through a real entry point: ``predict.py`` with arguments that pass its
    parser imports Detectron2 after reading them (``load_defeat``: fvcore's torch.jit.script
    warnings) and then refuses the override; with ``DEFEAT_SHOW_ALL_WARNINGS=1`` they are back."""
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "projects"), "OMP_NUM_THREADS": "1"}
    env.pop(kw.SHOW_ALL_ENV, None)
    config = os.path.join("configs", "demo", "student_slimR18.yaml")
    cmd = [sys.executable, "tools/predict.py", "--config-file", config, "--input", "README.md", "MODEL.NOPE", "1"]
    quiet = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    lines = quiet.stderr.strip().splitlines()
    assert quiet.returncode == 1 and "Non-existent key: MODEL.NOPE" in lines[-1], quiet.stderr
    assert "deprecated" not in quiet.stderr and len(lines) == 2 and "Known-harmless" in lines[0], quiet.stderr
    loud = subprocess.run(cmd, cwd=REPO, env={**env, kw.SHOW_ALL_ENV: "1"}, capture_output=True, text=True)
    assert "`torch.jit.script` is deprecated" in loud.stderr and "Non-existent key: MODEL.NOPE" in loud.stderr
