"""The module paths of the flat layout, kept importable: ``defeat.masks`` is ``defeat.modeling.masks``
(the same module object, so a monkeypatch of either reaches both). CHANGELOG.md lists the moves."""

import importlib
import importlib.abc
import importlib.machinery
import sys

# old path (below ``defeat.``) -> new path
MOVED = {
    "adapters": "modeling.adapters",
    "align": "modeling.align",
    "masks": "modeling.masks",
    "losses": "modeling.losses",
    "schedule": "modeling.schedule",
    "distiller": "modeling.distiller",
    "teacher": "modeling.teacher",
    "meta_arch": "modeling.meta_arch",
    "meta_arch.box_heads": "modeling.meta_arch.box_heads",
    "meta_arch.box_tap": "modeling.meta_arch.box_tap",
    "meta_arch.common": "modeling.meta_arch.common",
    "meta_arch.dense": "modeling.meta_arch.dense",
    "meta_arch.fcos": "modeling.meta_arch.fcos",
    "meta_arch.mixin": "modeling.meta_arch.mixin",
    "meta_arch.rcnn": "modeling.meta_arch.rcnn",
    "meta_arch.retinanet": "modeling.meta_arch.retinanet",
    "settings": "config.settings",
    "validation": "config.validation",
    "config_files": "config.files",
    "checkpoint": "engine.checkpoint",
    "data_checks": "engine.data_checks",
    "datasets": "engine.datasets",
    "ddp": "engine.ddp",
    "metrics_file": "engine.metrics_file",
    "mixed_precision": "engine.mixed_precision",
    "nonfinite": "engine.nonfinite",
    "dataset_stats": "analysis.dataset_stats",
    "export": "analysis.export",
    "plots": "analysis.loss_figures",
    "visualize": "analysis.mask_figures",
    "tool_checks": "analysis.cli",
}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: ``import defeat.masks`` (any old path) loads ``defeat.modeling.masks`` and
    registers that same module object under the old name, on first use (``import defeat`` stays
    as fast as its new layout: the figures' matplotlib is imported only where a tool draws)."""

    def __init__(self, package: str):
        self.package = package

    def find_spec(self, fullname, path=None, target=None):
        old = fullname[len(self.package) + 1 :] if fullname.startswith(self.package + ".") else None
        if old not in MOVED:
            return None
        new = f"{self.package}.{MOVED[old]}"
        return importlib.machinery.ModuleSpec(fullname, self, loader_state=new, is_package=False)

    def create_module(self, spec):
        return importlib.import_module(spec.loader_state)

    def exec_module(self, module):
        pass  # the new module ran when it was imported


def install(package: str = "defeat") -> None:
    """Serve every old path as an alias of its new module (first on ``sys.meta_path``, so that an
    old package's submodule is never loaded a second time under its old name)."""
    if not any(isinstance(f, _AliasFinder) and f.package == package for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(package))


def attribute(package: str, name: str):
    """``defeat.masks`` as an attribute of the package (module ``__getattr__``): the old top-level
    names, imported on first access; AttributeError for any other name."""
    if name not in MOVED:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(f"{package}.{name}")
