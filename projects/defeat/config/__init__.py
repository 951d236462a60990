"""What the user writes: Detectron2 config keys (``defaults``), DeFeat's settings and their one
validation gate (``settings``, ``validation``), and the config-file loader (``files``)."""

from .defaults import add_defeat_config
from .files import merge_defeat_config_file, resolve_teacher_config_file

__all__ = ["add_defeat_config", "merge_defeat_config_file", "resolve_teacher_config_file"]
