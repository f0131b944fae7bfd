"""SIGTERM and SIGHUP unwind like Ctrl-C, and no output is committed once one has arrived.

The handler raises :class:`~edgeq.errors.Terminated` wherever Python code runs next. That can be a place
that cannot pass it on: a finalizer (``__del__`` of TensorFlow's graph objects, where Python prints and
drops the exception) or a callback whose caller catches everything. The signal is remembered, so the
atomic writers refuse to commit after it (:func:`raise_if_terminated`) and the CLI still exits 128 + signal.
"""
from __future__ import annotations

import contextlib
import signal
import threading

from edgeq.errors import Terminated

_received: list[int] = []  # the termination signal being handled, if any


def received() -> int | None:
    """The termination signal that arrived during :func:`handled`, or None."""
    return _received[0] if _received else None


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if a termination signal arrived, even one whose first raise was swallowed."""
    if _received:
        raise Terminated(_received[0])


def _handler(signum: int, _frame) -> None:
    if _received:  # already unwinding: let the cleanup finish
        return
    _received.append(signum)
    raise Terminated(signum)


@contextlib.contextmanager
def handled():
    """SIGTERM/SIGHUP raise :class:`Terminated` (a KeyboardInterrupt) inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    _received.clear()
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received.clear()  # a later run in this process (tests, a notebook) starts unsignalled
