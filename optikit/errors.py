"""Errors: user mistakes become one line and exit code 2; anything else is a bug with a traceback."""
from __future__ import annotations


class OptikitError(Exception):
    """Base for every error optikit reports to a user as one line."""


class ConfigError(OptikitError):
    """A setting, option or file that optikit cannot accept."""


class DataError(OptikitError):
    """A dataset that cannot be used (missing columns, empty, a single class)."""


class ModelLoadError(OptikitError):
    """A model path that is missing, unreadable or in an unknown format."""


class UnknownPluginError(ConfigError):
    """A plugin name that no registry holds."""


class MissingDependencyError(OptikitError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'optikit[{extra}]'")


class PassError(OptikitError):
    """A pass that failed on a model it accepted."""


class TrainingError(OptikitError):
    """Training that diverged (a loss or weight not finite) or learnt nothing (validation accuracy at chance); the
    message names the option to change, since the usual cause is a setting (a learning rate typed 1e4 for 1e-4)."""


class MeasurementError(OptikitError):
    """A measurement that could not be taken."""
