"""CLI behaviour shared by every command: help, interrupts, internal errors, atomic output."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from edgeq.errors import OutputError
from edgeq.fileio import atomic_write_bytes


def test_help_teaches_without_importing_tensorflow():
    code = ("import sys; from edgeq.cli.main import main; rc = main(['convert', '--help']); "
            "print('TF', 'tensorflow' in sys.modules); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "edgeq convert model.keras --mode int8" in res.stdout
    assert "TF False" in res.stdout


def test_ctrl_c_leaves_no_output(cli, cnn, tmp_path, monkeypatch):
    pipeline = importlib.import_module("edgeq.convert")  # the module, not the edgeq.convert() facade

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "quantize_float_model", interrupted)
    res = cli("convert", cnn.keras, "--mode", "fp16", "--out", tmp_path / "m.tflite")
    assert res.code == 130 and "interrupted" in res.err
    assert list(tmp_path.iterdir()) == []


def test_internal_errors_are_one_line_with_exit_1(cli, cnn, tmp_path, monkeypatch):
    pipeline = importlib.import_module("edgeq.convert")
    monkeypatch.setattr(pipeline, "inspect_tflite", lambda **k: 1 / 0)
    res = cli("convert", cnn.keras, "--mode", "fp16", "--out", tmp_path / "m.tflite")
    assert res.code == 1 and "internal error: ZeroDivisionError" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "m.tflite").exists()


def test_atomic_write_replaces_whole_file_or_nothing(tmp_path, monkeypatch):
    target = tmp_path / "m.bin"
    target.write_bytes(b"old")
    import os

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OutputError, match=r"m.bin: writing failed \(disk full\)"):  # one line, not a traceback
        atomic_write_bytes(target, b"new" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
