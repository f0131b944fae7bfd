"""Every error edgeq raises for problems with the user's input, device or environment: one hierarchy.

Every :class:`EdgeqError` becomes one line on stderr and exit code 2 in the CLI; the message names the
file, tensor, op or device at fault and says what to do. Anything else escaping is a bug in edgeq.
"""
from __future__ import annotations

import re


_WRAPPERS = re.compile(r"^(Exception encountered when calling|Traceback|Call arguments received|During handling)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def first_line(exc: BaseException | str) -> str:
    """The informative line of a (possibly multi-line) message, for a one-line error: the first line,
    plus the next one when the first only says where it happened (Keras' "Exception encountered when
    calling layer ..."). An exception with an empty message gives its type name."""
    text = exc if isinstance(exc, str) else str(exc)
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    if not lines:
        return text.strip() or type(exc).__name__
    head = lines[0]
    if _WRAPPERS.search(re.sub(r"^\w+(Error|Exception):\s*", "", head)):
        detail = next((ln for ln in lines[1:] if not _WRAPPERS.search(ln)), "")
        head = f"{head} {detail}".strip()
    return head


class EdgeqError(Exception):
    """A problem with the user's input or environment that the user can fix."""

    exit_code = 2


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwinds exactly as Ctrl-C does (temporary files and remote run folders
    removed, child processes ended), then the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


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
