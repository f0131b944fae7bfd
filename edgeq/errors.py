"""Every error edgeq raises for problems with the user's input, device or environment: one hierarchy.

Every :class:`EdgeqError` becomes one line on stderr and exit code 2 in the CLI; the message names the
file, tensor, op or device at fault and says what to do. Anything else escaping is a bug in edgeq.
"""
from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty): what a
    one-line error quotes from a library that raises multi-line text."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class EdgeqError(Exception):
    """A problem with the user's input or environment that the user can fix."""

    exit_code = 2


class ModelLoadError(EdgeqError):
    """A model file or directory that is missing, empty, corrupt or of an unknown kind."""


class DataError(EdgeqError):
    """Calibration or evaluation data that does not fit the model."""


class ConversionError(EdgeqError):
    """The converter refused the model in the requested mode."""


class OutputError(EdgeqError):
    """An output path that cannot be written."""


class OptionError(EdgeqError):
    """An option value that is not one of the allowed ones (e.g. ``mode="int9"``)."""


class MissingExtra(EdgeqError):
    """An optional dependency group (``pip install edgeq[NAME]``) that this input or option needs."""


class BenchmarkFailed(EdgeqError):
    """A benchmark run produced no timings (crash, refused model, missing delegate); the message ends with
    the tail of the tool's output."""


class TargetError(EdgeqError):
    """An unknown target name or a target profile file that is not valid."""


class DeviceError(EdgeqError):
    """A device that cannot be used: missing, unauthorized, dropped, timed out, or a bad host key."""


class DeviceMissing(DeviceError):
    """Nothing answers at the device's address / serial."""


class DeviceUnauthorized(DeviceError):
    """The device refuses us: adb not authorized, or no ssh key it accepts."""


class HostKeyError(DeviceError):
    """The ssh host key is unknown or differs from known_hosts."""


class DeviceLost(DeviceError):
    """The device went away in the middle of a run."""


class DeviceTimeout(DeviceError):
    """A command on the device did not finish in time."""


class RemoteCommandFailed(DeviceError):
    """A command on the device ran and failed (exit code != 0)."""
