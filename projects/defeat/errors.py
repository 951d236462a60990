"""Every error class DeFeat raises. Each module that raises one re-exports it under its old name."""

__all__ = [
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
]


class DeFeatConfigError(ValueError):
    """A ``MODEL.DEFEAT`` (``model.defeat``) setting is invalid or does not fit the model pair."""


class ConfigFileError(ValueError):
    """A config file is missing, unreadable, or its overrides do not apply."""


class OverrideError(ValueError):
    """A ``key=value`` command-line override names no config key or has the wrong type."""


class TeacherLoadError(RuntimeError):
    """The teacher's config or weights are missing, unreadable or incomplete."""


class DatasetSpecError(ValueError):
    """A dataset spec is malformed, names missing files, or clashes with a registered dataset."""


class DataCheckError(ValueError):
    """A training dataset does not fit the model, or holds nothing to train on, or an unreadable image."""


class ResumeError(RuntimeError):
    """``--resume`` cannot continue the run in OUTPUT_DIR as it is."""


class AMPUnsupportedError(RuntimeError):
    """Mixed precision was asked for on a device that cannot run it."""


class ExportError(ValueError):
    """The checkpoint cannot be read or exported (or traced), or the output would overwrite it."""


class OutputError(ValueError):
    """What a run or tool would write lands on something it reads, or on an earlier result."""


class WeightsError(RuntimeError):
    """Weights to evaluate or predict with leave parameters random or mismatched in shape."""


class SummaryError(ValueError):
    """Runs to summarize have no evaluation to read, or were evaluated on different test sets."""
