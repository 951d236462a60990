"""Every error class DeFeat raises, all derived from :class:`DeFeatError`; and the reading of
boolean environment variables.

An entry point turns a :class:`DeFeatError` (a user's mistake: a setting, a file, a folder) into
one line and exit status 1; ``DEFEAT_TRACEBACK=1`` keeps the traceback for debugging.
"""

import os
from typing import Mapping, Optional

__all__ = [
    "DeFeatError",
    "EnvironmentVariableError",
    "env_flag",
    "DeFeatConfigError",
    "ConfigFileError",
    "OverrideError",
    "TeacherLoadError",
    "DatasetSpecError",
    "DataCheckError",
    "ResumeError",
    "AMPUnsupportedError",
    "ExportError",
    "OutputError",
    "WeightsError",
    "SummaryError",
    "MachineError",
]


class DeFeatError(Exception):
    """Base of every error DeFeat raises for a user's mistake; its message names the setting or
    file and the fix."""


class EnvironmentVariableError(DeFeatError, ValueError):
    """An environment variable that DeFeat reads holds a value it cannot use."""


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str, environ: Optional[Mapping[str, str]] = None) -> bool:
    """The boolean environment variable ``name``: ``1/true/yes/on`` (any case) is True, unset,
    empty and ``0/false/no/off`` False.

    Raises:
        EnvironmentVariableError: any other value, naming the variable.
    """
    value = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise EnvironmentVariableError(
        f"environment variable {name}={value!r} is not a boolean: "
        "set it to 1/true/yes/on or 0/false/no/off, or unset it"
    )


class DeFeatConfigError(DeFeatError, ValueError):
    """A ``MODEL.DEFEAT`` (``model.defeat``) setting is invalid or does not fit the model pair."""


class ConfigFileError(DeFeatError, ValueError):
    """A config file is missing, unreadable, or its overrides do not apply."""


class OverrideError(DeFeatError, ValueError):
    """A ``key=value`` command-line override names no config key or has the wrong type."""


class TeacherLoadError(DeFeatError, RuntimeError):
    """The teacher's config or weights are missing, unreadable or incomplete."""


class DatasetSpecError(DeFeatError, ValueError):
    """A dataset spec is malformed, names missing files, or clashes with a registered dataset."""


class DataCheckError(DeFeatError, ValueError):
    """A training dataset does not fit the model, or holds nothing to train on, or an unreadable image."""


class ResumeError(DeFeatError, RuntimeError):
    """``--resume`` cannot continue the run in OUTPUT_DIR as it is."""


class AMPUnsupportedError(DeFeatError, RuntimeError):
    """Mixed precision was asked for on a device that cannot run it."""


class ExportError(DeFeatError, ValueError):
    """The checkpoint cannot be read or exported (or traced), or the output would overwrite it."""


class OutputError(DeFeatError, ValueError):
    """What a run or tool would write lands on something it reads, or on an earlier result."""


class WeightsError(DeFeatError, RuntimeError):
    """Weights are missing, unreadable (truncated, not a checkpoint), cannot be downloaded, or
    leave parameters random or mismatched in shape."""


class SummaryError(DeFeatError, ValueError):
    """Runs to summarize have no evaluation to read, or were evaluated on different test sets."""


class MachineError(DeFeatError, RuntimeError):
    """The machine cannot run the config as it is: a CUDA device it does not have, or weights to
    download that are neither in Detectron2's download cache nor reachable."""
