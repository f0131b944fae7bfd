"""Bad input: exit code 2, one line naming the file/tensor and what to do, no traceback, no output file,
and the input left as it was."""
from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import one_line_error, sha256


@pytest.fixture
def out(tmp_path):
    return tmp_path / "out.tflite"


def test_missing_model(cli, tmp_path, out):
    one_line_error(cli("convert", tmp_path / "nope.keras", "--mode", "fp16", "--out", out), "nope.keras",
                   "no such file")
    assert not out.exists()


def test_empty_model(cli, tmp_path, out):
    (tmp_path / "empty.keras").write_bytes(b"")
    one_line_error(cli("convert", tmp_path / "empty.keras", "--mode", "fp16", "--out", out), "empty.keras", "empty")


def test_corrupt_model(cli, tmp_path, out):
    (tmp_path / "bad.keras").write_bytes(os.urandom(2048))
    one_line_error(cli("convert", tmp_path / "bad.keras", "--mode", "fp16", "--out", out), "bad.keras",
                   "not a loadable Keras model")
    assert not out.exists()


def test_unknown_format(cli, tmp_path, out):
    (tmp_path / "m.pt").write_bytes(b"xx")
    one_line_error(cli("convert", tmp_path / "m.pt", "--out", out), "m.pt", "unknown model format")


def test_unknown_mode(cli, cnn, out):
    one_line_error(cli("convert", cnn.keras, "--mode", "int4", "--out", out), "--mode", "int4")


@pytest.mark.parametrize("case,needle", [
    ("wrong_shape", "expects (N,28,28,1)"),
    ("wrong_dtype", "uint8 but the input is float32"),
    ("nan", "NaN or Inf (first at sample 3)"),
    ("empty", "no samples"),
    ("wrong_key", "no array for input"),
])
def test_bad_calibration_data(cli, cnn, tmp_path, out, case, needle):
    x = np.load(cnn.calib)["x"][:10]
    arrays = {
        "wrong_shape": {"x": np.zeros((10, 32, 32, 3), np.float32)},
        "wrong_dtype": {"x": (x * 255).astype(np.uint8)},
        "nan": {"x": np.where(np.arange(10)[:, None, None, None] == 3, np.nan, x).astype(np.float32)},
        "empty": {"x": np.zeros((0, 28, 28, 1), np.float32)},
        "wrong_key": {"a": x, "b": x},
    }[case]
    data = tmp_path / "calib.npz"
    np.savez(data, **arrays)
    before = sha256(cnn.keras)
    res = cli("convert", cnn.keras, "--mode", "int8", "--calib", data, "--out", out)
    one_line_error(res, str(data), needle)
    assert not out.exists()
    assert sha256(cnn.keras) == before


def test_corrupt_calibration_file(cli, cnn, tmp_path, out):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04garbage")
    one_line_error(cli("convert", cnn.keras, "--calib", tmp_path / "c.npz", "--out", out), "c.npz", "not a readable")


def test_unwritable_output_fails_before_converting(cli, cnn, tmp_path):
    one_line_error(cli("convert", cnn.keras, "--mode", "fp16", "--out", tmp_path / "no" / "dir" / "m.tflite"),
                   "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permission bits: use a path under a file instead
            target = tmp_path / "afile"
            target.write_text("x")
            res = cli("convert", cnn.keras, "--mode", "fp16", "--out", target / "m.tflite")
            one_line_error(res, "does not exist")
        else:
            one_line_error(cli("convert", cnn.keras, "--mode", "fp16", "--out", locked / "m.tflite"), "not writable")
    finally:
        locked.chmod(0o700)


def test_output_over_input_is_refused(cli, cnn, tmp_path):
    m = tmp_path / "m.keras"
    m.write_bytes(cnn.keras.read_bytes())
    one_line_error(cli("convert", m, "--mode", "fp16", "--out", m), "overwrite the input")
    assert sha256(m) == sha256(cnn.keras)


def test_int8_without_calibration(cli, cnn, out):
    one_line_error(cli("convert", cnn.keras, "--mode", "int8", "--out", out), "--calib")


def test_failed_conversion_leaves_previous_output_intact(cli, sin_model, tmp_path):
    out = tmp_path / "m.tflite"
    out.write_bytes(b"previous")
    res = cli("convert", sin_model, "--mode", "int8", "--calib", sin_model.parent / "calib.npz", "--out", out)
    one_line_error(res, "SIN")
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]  # no temp files left behind


def test_debug_shows_the_traceback(cli, tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"junk" * 100)
    with pytest.raises(Exception):
        cli("--debug", "convert", tmp_path / "bad.keras", "--mode", "fp16")
    os.environ.pop("EDGEQ_DEBUG", None)


@pytest.mark.parametrize("content,needle", [(b"", "empty"), (b"\x00" * 64, "not a TFLite flatbuffer")])
def test_inspect_and_eval_reject_non_tflite(cli, cnn, tmp_path, content, needle):
    bad = tmp_path / "m.tflite"
    bad.write_bytes(content)
    one_line_error(cli("inspect", bad), "m.tflite", needle)
    one_line_error(cli("eval", bad, "--data", cnn.eval), "m.tflite", needle)
