"""The module paths of the flat layout, kept importable: ``defeat.masks`` is ``defeat.modeling.masks``
(the same module object, so a monkeypatch of either reaches both). CHANGELOG.md lists the moves."""

import importlib
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


def install(package: str = "defeat") -> None:
    """Register every old path in ``sys.modules`` as an alias of its new module."""
    for old, new in MOVED.items():
        module = sys.modules.setdefault(f"{package}.{old}", importlib.import_module(f"{package}.{new}"))
        parent, _, name = f"{package}.{old}".rpartition(".")
        if parent in sys.modules:  # ``defeat.masks`` as an attribute too (not ``defeat.demo``: a leaf)
            setattr(sys.modules[parent], name, module)
