"""The paths a command line names, read before Detectron2 is imported: ``~`` and ``$VARS``
expanded, and a config file that does not exist refused (the same error as the loader's,
``defeat.config.files.load_config``, seconds earlier)."""

import os

from ..errors import ConfigFileError

__all__ = ["expand_path", "is_lazy_config", "check_config_file"]


def expand_path(path: str) -> str:
    """``~`` and ``$VARS`` expanded (as a shell would); URLs (``scheme://``) left as they are."""
    if not path or "://" in path:
        return path
    return os.path.expandvars(os.path.expanduser(path))


def is_lazy_config(path: str) -> bool:
    """Whether ``path`` is a LazyConfig (Python) file rather than a YAML one."""
    return path.endswith(".py")


def check_config_file(path: str) -> None:
    """Raises:
    ConfigFileError: ``path`` is a folder, or not a file (``config file not found: 'path'``)."""
    if os.path.isdir(path):
        raise ConfigFileError(f"config file {path!r} is a folder; give the .yaml or .py config file in it")
    if not os.path.isfile(path):
        raise ConfigFileError(f"config file not found: {path!r}")
