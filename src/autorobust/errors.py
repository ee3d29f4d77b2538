"""Exceptions for problems in user input (files, configs, names, settings).

Every error a user can cause derives from :class:`AutorobustError`; the CLI prints such an error
as one line and exits with status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "AutorobustError",
    "ConfigError",
    "DataError",
    "ShiftError",
    "UnknownNameError",
    "WriteError",
]


class AutorobustError(Exception):
    """Base class of errors caused by user input; the message is one line meant for the user."""


class DataError(AutorobustError, ValueError):
    """A data file is missing, corrupt or inconsistent; the message names the file."""


class ShiftError(AutorobustError, ValueError):
    """A distribution-shift setting is impossible (e.g. a class would be left empty)."""


class ConfigError(AutorobustError, ValueError):
    """A configuration value is invalid; the message names the field's path."""


class UnknownNameError(AutorobustError, ValueError):
    """A name looked up in a registry does not exist; the message lists the valid names."""


class WriteError(AutorobustError, OSError):
    """A file could not be written (full disk, no permission, read-only file system...); the
    message names the file and the cause. It is an :class:`OSError` too, so code that handles
    failed writes as such keeps working."""
