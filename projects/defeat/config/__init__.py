"""What the user writes: Detectron2 config keys (``defaults``), DeFeat's settings and their one
validation gate (``settings``, ``validation``), and the config-file loader (``files``).

The three names below import Detectron2 on first use, so that the light modules of this package
(``presets``, ``paths``) import without it (a command's argument parsing)."""

__all__ = ["add_defeat_config", "merge_defeat_config_file", "resolve_teacher_config_file"]


def __getattr__(name: str):
    if name == "add_defeat_config":
        from .defaults import add_defeat_config

        return add_defeat_config
    if name in ("merge_defeat_config_file", "resolve_teacher_config_file"):
        from . import files

        return getattr(files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
