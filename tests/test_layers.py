"""The package's layers: no module imports a module of a higher layer, no import cycles, and the
demo is a leaf. Read from the source (every ``import`` / ``from ... import`` of the package,
module level or inside functions), so it holds for code paths the other tests do not run."""

import ast
import os

import pytest
from conftest import REPO

PACKAGE = os.path.join(REPO, "projects", "defeat")
# Lower layers first; a module may import its own layer and the ones before it.
LAYERS = ["known_warnings", "errors", "config", "engine", "modeling", "analysis", "demo"]
TOP_LEVEL = {"__init__", "_compat"}  # the package's entry: imports every layer


def _modules():
    """``{dotted name below defeat: path}`` of every module of the package."""
    out = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), PACKAGE)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(root, f)
    return out


def _imports(name, path):
    """The package modules ``name`` imports (dotted, below ``defeat``)."""
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and (node.module == "defeat" or node.module.startswith("defeat.")):
                target = node.module[len("defeat.") :] if node.module != "defeat" else ""
            else:
                continue
            found.add(target)
            found.update(f"{target}.{a.name}".strip(".") for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("defeat.") :] for a in node.names if a.name.startswith("defeat."))
    return found


def _graph():
    modules = _modules()
    return {n: {m for m in _imports(n, p) if m in modules and m != n} for n, p in modules.items()}


def _layer(name):
    return LAYERS.index(name.split(".")[0]) if name.split(".")[0] in LAYERS else None


def test_no_module_imports_a_higher_layer():
    bad = []
    for name, deps in _graph().items():
        if name in TOP_LEVEL or _layer(name) is None:
            continue
        bad += [f"{name} -> {d}" for d in deps if d not in TOP_LEVEL and (_layer(d) or 0) > _layer(name)]
    assert not bad, bad


def test_nothing_outside_the_demo_imports_it():
    bad = [
        f"{n} -> {d}" for n, deps in _graph().items() if not n.startswith("demo") for d in deps if d.startswith("demo")
    ]
    assert not bad, bad


def test_no_import_cycles():
    graph = _graph()
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if dep in TOP_LEVEL:
                continue
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state and node not in TOP_LEVEL:
            visit(node, [node])
    assert not cycles, cycles


def test_the_check_sees_a_violation(tmp_path, monkeypatch):
    """The checks are not vacuous: an engine module importing modeling is reported."""
    bad = tmp_path / "defeat" / "engine"
    bad.mkdir(parents=True)
    (tmp_path / "defeat" / "errors.py").write_text("")
    (bad / "x.py").write_text("from ..modeling import masks\n")
    (tmp_path / "defeat" / "modeling").mkdir()
    (tmp_path / "defeat" / "modeling" / "masks.py").write_text("from ..engine import x\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", str(tmp_path / "defeat"))
    graph = _graph()
    assert "modeling.masks" in graph["engine.x"] and "engine.x" in graph["modeling.masks"]
    try:
        test_no_module_imports_a_higher_layer()
    except AssertionError as e:
        assert "engine.x -> modeling.masks" in str(e)
    else:
        raise AssertionError("the layer check missed engine -> modeling")
    try:
        test_no_import_cycles()
    except AssertionError as e:
        assert "engine.x" in str(e) and "modeling.masks" in str(e)
    else:
        raise AssertionError("the cycle check missed engine.x <-> modeling.masks")


def test_importing_the_package_and_the_scripts_loads_no_demo_code():
    """At run time too: ``import defeat`` and the training scripts leave ``defeat.demo`` unloaded
    (the demo datasets are provided by name, imported only when a run uses them), and matplotlib
    (the figures' tools import it; the flat layout's old paths are aliased on first use)."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, '.'); import defeat, train_net, lazy_train_net; "
        "print(sorted(m for m in sys.modules if m.startswith(('defeat.demo', 'matplotlib'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_the_flat_layouts_module_paths_still_import_as_the_same_modules(monkeypatch):
    """Every old path of ``defeat._compat.MOVED`` imports, and is the new module itself (so a
    monkeypatch through either path reaches the code)."""
    import importlib

    from defeat._compat import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(f"defeat.{old}") is importlib.import_module(f"defeat.{new}"), old
    from defeat.config import add_defeat_config, merge_defeat_config_file  # noqa: F401 (a package now)
    from defeat.demo.backbone import slim_resnet
    from defeat.masks import gt_masks
    from defeat.modeling.backbones import slim_resnet as new_slim_resnet
    from defeat.modeling.masks import gt_masks as new_gt_masks

    assert gt_masks is new_gt_masks and slim_resnet is new_slim_resnet
    import defeat

    monkeypatch.delattr(defeat, "plots")  # set by the import above: the module __getattr__ serves it too
    assert defeat.plots is importlib.import_module("defeat.analysis.loss_figures")
    with pytest.raises(AttributeError, match="module 'defeat' has no attribute 'plotz'"):
        defeat.plotz  # noqa: B018  (any other name is still an error)
    with pytest.raises(ModuleNotFoundError, match="defeat.plotz"):
        importlib.import_module("defeat.plotz")
