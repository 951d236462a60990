"""The package's layers: no module imports a module of a higher layer, no import cycles, and the
demo is a leaf. Read from the source (every ``import`` / ``from ... import`` of the package,
module level or inside functions), so it holds for code paths the other tests do not run."""

import ast
import os

from helpers import REPO

PACKAGE = os.path.join(REPO, "projects", "defeat")
# Lower layers first, in Detectron2's order (config, checkpoint and data below modeling, engine
# above it); a module may import its own layer and the ones before it.
LAYERS = ["errors", "config", "checkpoint", "data", "modeling", "engine", "analysis", "demo"]
TOP_LEVEL = {"__init__"}  # the package's entry: imports what fills the registries


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
    """The checks are not vacuous: a modeling module importing engine is reported."""
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
        assert "modeling.masks -> engine.x" in str(e) and "engine.x -> modeling.masks" not in str(e)
    else:
        raise AssertionError("the layer check missed modeling -> engine")
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


IMPORT_STATE = """
import logging, sys, warnings
def state():
    loggers = {n: (list(logging.getLogger(n).handlers), list(logging.getLogger(n).filters)) for n in NAMES}
    return list(warnings.filters), loggers, list(sys.meta_path), warnings.showwarning
"""


def test_importing_defeat_changes_nothing_but_the_registries():
    """``import defeat`` in a process whose libraries are loaded already (what a user's Detectron2
    code has imported) leaves the warning filters, the ``detectron2``/``fvcore`` loggers' handlers
    and filters and ``sys.meta_path`` as they were, and fills the registries."""
    import subprocess
    import sys

    code = (
        IMPORT_STATE + "NAMES = ('detectron2', 'fvcore', 'fvcore.common.checkpoint', 'torch.fx._symbolic_trace', "
        "'torch.utils.cpp_extension')\n"
        "import importlib, json\n"
        "third = json.loads(sys.argv[1])\n"
        "for name in third:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        pass  # a name some loader registered (an extension's alias), not importable itself\n"
        "before = state()\n"
        "import defeat\n"
        "from detectron2.modeling import BACKBONE_REGISTRY, META_ARCH_REGISTRY\n"
        "assert 'DeFeatRCNN' in META_ARCH_REGISTRY and 'build_slim_resnet_fpn_backbone' in BACKBONE_REGISTRY\n"
        "after = state()\n"
        "print('same' if before == after else f'changed: {before} -> {after}')\n"
    )
    # the libraries that ``import defeat`` loads, imported first as a user's code would have
    listing = (
        "import sys, json; before = set(sys.modules); import defeat; "
        "print(json.dumps(sorted(m for m in set(sys.modules) - before "
        "if not m.startswith(('defeat', '__main__', '__mp_main__')))))"
    )
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    third = subprocess.run(
        [sys.executable, "-c", listing], cwd=REPO, capture_output=True, text=True, check=True, env=env
    )
    modules = third.stdout.strip().splitlines()[-1]
    out = subprocess.run([sys.executable, "-c", code, modules], cwd=REPO, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "same", out.stdout[-2000:]


KINDS = {"CfgNode", "DictConfig", "LazyConfig"}


def _kind_branches(path):
    """``line: text`` of each place in ``path`` that tells a YAML config from a LazyConfig: an
    ``isinstance`` against a config class, or a condition that calls an ``is_lazy*`` function."""
    tree = ast.parse(open(path).read())
    source = open(path).read().splitlines()

    def names(node):
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
            n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
        }

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            if len(node.args) == 2 and names(node.args[1]) & KINDS:
                found.append(node.lineno)
        if isinstance(node, (ast.If, ast.IfExp, ast.While)) and any(n.startswith("is_lazy") for n in names(node.test)):
            found.append(node.lineno)
    return [f"{path}:{n}: {source[n - 1].strip()}" for n in sorted(set(found))]


def _code_outside_config():
    roots = [PACKAGE, os.path.join(REPO, "tools"), os.path.join(REPO, "benchmarks")]
    for root in roots:
        for folder, _, files in os.walk(root):
            if os.path.join(PACKAGE, "config") in folder:
                continue
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))
    yield from (os.path.join(REPO, f) for f in os.listdir(REPO) if f.endswith(".py"))


def test_only_the_config_package_tells_the_config_kinds_apart():
    """Code outside ``defeat/config`` asks a loaded config through ``defeat.config.files`` and
    never branches on its kind (YAML ``CfgNode`` or LazyConfig)."""
    bad = [line for path in _code_outside_config() for line in _kind_branches(path)]
    assert not bad, bad


def test_the_kind_check_sees_a_branch(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text(
        "def f(cfg, path):\n"
        "    if isinstance(cfg, (dict, CfgNode)):\n        return 1\n"
        "    return 2 if is_lazy_config(path) else 3\n"
        "def g(cfg):\n    return isinstance(cfg, omegaconf.DictConfig)\n"
        "def h(cfg):\n    return isinstance(cfg, dict)\n"
    )
    assert [line.split(":")[1] for line in _kind_branches(str(bad))] == ["2", "4", "6"]
