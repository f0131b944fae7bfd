"""Keep TensorFlow's C++ chatter (printed straight to file descriptor 2) out of edgeq's output.

The converter prints lines such as ``fully_quantize: 0, inference_type: 6`` with C ``fprintf``, which
Python's logging cannot silence. We point fd 2 at a temporary file while native code runs and keep
the text: it is shown with ``--debug`` and appended to errors, where it often names the failing op.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile

_captured: list[str] = []  # most recent captured text, for error messages
_depth = 0
_saved_fd: int | None = None


def original_stderr():
    """A text stream on the real stderr, usable for progress bars while fd 2 is captured."""
    if _saved_fd is None:
        return sys.stderr
    return os.fdopen(os.dup(_saved_fd), "w", buffering=1, closefd=True)


def last_captured() -> str:
    """Native output captured by the most recent :func:`quiet_native_output` block."""
    return _captured[-1] if _captured else ""


@contextlib.contextmanager
def quiet_native_output():
    """Capture everything written to fd 2 inside the block (nested blocks share one capture)."""
    global _depth, _saved_fd
    if _depth > 0 or os.environ.get("EDGEQ_DEBUG"):
        _depth += 1
        try:
            yield
        finally:
            _depth -= 1
        return
    sys.stderr.flush()
    tmp = tempfile.TemporaryFile(mode="w+b")
    _saved_fd = os.dup(2)
    os.dup2(tmp.fileno(), 2)
    _depth = 1
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        _saved_fd = None
        _depth = 0
        tmp.seek(0)
        _captured[:] = [tmp.read().decode("utf-8", "replace")]
        tmp.close()
