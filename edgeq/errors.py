"""Errors edgeq raises for problems with the user's input.

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
