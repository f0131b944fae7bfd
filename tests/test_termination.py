"""edgeq.termination: a termination signal ends the run even where its exception cannot propagate."""
from __future__ import annotations

import os
import signal
import sys

import pytest

from edgeq import termination
from edgeq.errors import Terminated
from edgeq.fileio import atomic_write_bytes


def test_a_signal_raised_in_a_finalizer_still_stops_the_writer(tmp_path, monkeypatch):
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)

    class Finalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    out = tmp_path / "m.tflite"
    with termination.handled():
        Finalizer()  # collected at once; Python drops the handler's exception there
        assert [d.exc_type for d in dropped] == [Terminated]
        assert termination.received() == signal.SIGTERM
        with pytest.raises(Terminated):
            atomic_write_bytes(out, b"model")
    assert list(tmp_path.iterdir()) == []
    assert termination.received() is None  # cleared when the block ends
    atomic_write_bytes(out, b"model")
    assert out.read_bytes() == b"model"


def test_outside_the_block_the_previous_handlers_are_back():
    before = signal.getsignal(signal.SIGTERM)
    with termination.handled():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
