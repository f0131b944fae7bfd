"""ONNX input: PyTorch-exported models through onnx2tf's float graph and edgeq's one quantization pipeline.

onnx2tf is slow (tens of seconds per model on a loaded machine), so each ONNX model is converted to a
FloatModel once per module (``onnx_loads``; module scope, so its patch of ``edgeq.convert`` ends with this file
and never reaches another test module) and every conversion in this file reuses it; the first
load of each model runs with outbound connections refused and in a watched working directory.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, one_line_error, sha256
from tests.claims import margin_points, results

FASHION = SAMPLES / "fashion_torch"
ENCODER = SAMPLES / "tiny_encoder"
SEQ = ("--input-shape", "input_ids=1,16", "--input-shape", "attention_mask=1,16")


@dataclasses.dataclass
class Loads:
    models: dict
    connect_attempts: list
    cwd_before: set
    cwd_after: set | None = None


@pytest.fixture(scope="module")
def onnx_loads():
    """Cache FloatModels by (path, options) and make ``edgeq.convert`` use the cache.

    Every real load runs with socket connections refused (any attempt is recorded): the proof that
    ONNX conversion needs no network.
    """
    conv = importlib.import_module("edgeq.convert")  # the module; ``edgeq.convert`` is also a function
    from edgeq.sources import load_float_model

    cwd = Path.cwd()
    state = Loads({}, [], set(os.listdir(cwd)))
    real_connect = socket.socket.connect

    def refuse(sock, address):
        state.connect_attempts.append(address)
        raise OSError("network disabled by test_onnx")

    def cached(path, **options):
        key = (str(Path(path).resolve()), json.dumps(options, sort_keys=True, default=str))
        if key not in state.models:
            socket.socket.connect = refuse
            try:
                state.models[key] = load_float_model(path, **options)
            finally:
                socket.socket.connect = real_connect
            state.cwd_after = set(os.listdir(cwd))
        # A view whose close() keeps the shared temporary SavedModel.
        return dataclasses.replace(state.models[key], _tmpdir=None)

    original = conv.load_float_model
    conv.load_float_model = cached
    yield state
    conv.load_float_model = original
    for fm in state.models.values():
        fm.close()


def _convert_json(*args) -> dict:
    """``edgeq convert ARGS --json`` in-process, outside any function-scoped capture (for session fixtures)."""
    from edgeq.cli.main import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(["convert", *map(str, args), "--json", "--no-progress"])
    assert code == 0, args
    return json.loads(buf.getvalue())


@pytest.fixture(scope="module")
def fashion_int8(onnx_loads, tmp_path_factory):
    """The PyTorch classifier, full INT8, with NCHW calibration and eval data (one onnx2tf run)."""
    out = tmp_path_factory.mktemp("onnx") / "fashion_int8.tflite"
    before = sha256(FASHION / "model.onnx")
    rep = _convert_json(FASHION / "model.onnx", "--mode", "int8", "--calib", FASHION / "calib.npz",
                        "--eval", FASHION / "eval.npz", "--out", out)
    return rep, out, before


def _report(res) -> dict:
    assert res.code == 0, res.err
    return json.loads(res.out)


def test_fashion_int8_offline_clean_and_accurate(fashion_int8, onnx_loads):
    rep, out, before = fashion_int8
    assert out.exists() and sha256(FASHION / "model.onnx") == before  # input never modified
    assert onnx_loads.connect_attempts == []  # onnx2tf ran with the network refused and tried nothing
    assert onnx_loads.cwd_after == onnx_loads.cwd_before  # its scratch files stayed in its temp dir
    assert rep["source_kind"] == "onnx" and rep["fully_integer"] is True
    assert rep["inputs"][0]["shape"][1:] == [28, 28, 1]  # NCHW ONNX input became NHWC
    assert any("NCHW" in n and "transposed" in n for n in rep["notes"])  # NCHW data said so
    fid = rep["fidelity"]
    assert fid["inputs"] == "calibration" and fid["samples"] > 0
    assert fid["max_rel_error"] < 1e-3 and fid["cosine"] > 0.9999
    acc = rep["accuracy"]
    assert acc["float_top1"] > 0.8  # onnxruntime on the original ONNX model, real test images
    # README/docs/onnx.md claim (bench_onnx, same calibration and the 2,000 eval images it never sees): drop
    # 0.25 points. Bound: the claim plus the noise of a difference on 2,000 images (claims.margin_points,
    # ~0.33 pt at 99.45% agreement).
    claim = results("bench_onnx")["classifiers"]["fashion_torch"]["edgeq_int8"]["drop_points"]
    assert acc["samples"] == 2000
    assert acc["drop_points"] <= claim + margin_points(acc["vs_float"]["agreement"], acc["samples"])
    assert acc["vs_float"]["agreement"] > 0.97


@pytest.mark.parametrize("mode", ["fp32", "fp16", "dynamic", "int8-fallback", "int16x8"])
def test_fashion_every_mode(fashion_int8, mode, cli, tmp_path):
    out = tmp_path / f"{mode}.tflite"
    args = ["--calib", FASHION / "calib.npz", "--calib-samples", "50"] if mode in ("int8-fallback", "int16x8") else []
    rep = _report(cli("convert", FASHION / "model.onnx", "--mode", mode, *args, "--out", out, "--json"))
    assert out.exists() and rep["mode"] == mode
    assert rep["fidelity"]["max_rel_error"] < 1e-3
    if mode == "fp32":
        assert rep["size_bytes"] == rep["float_size_bytes"]
    else:
        assert rep["size_bytes"] < 0.6 * rep["float_size_bytes"]


@pytest.fixture(scope="module")
def encoder(onnx_loads):
    """The tiny PyTorch encoder as loaded for calibrated modes (one onnx2tf run, network refused)."""
    conv = importlib.import_module("edgeq.convert")
    return conv.load_float_model(ENCODER / "model.onnx", quantized_activations=True,
                                 input_shapes={"input_ids": (1, 16), "attention_mask": (1, 16)})


@pytest.fixture(scope="module")
def encoder_reports(encoder, tmp_path_factory):
    """fp16, dynamic and full-INT8 conversions of the encoder, each evaluated against onnxruntime."""
    d = tmp_path_factory.mktemp("encoder")
    reps = {}
    for mode in ("fp16", "dynamic", "int8"):
        calib = ("--calib", ENCODER / "calib.npz") if mode == "int8" else ()
        reps[mode] = _convert_json(ENCODER / "model.onnx", "--mode", mode, *calib, *SEQ,
                                   "--eval", ENCODER / "eval.npz", "--out", d / f"{mode}.tflite")
    return reps


# cosine of the pooled embedding against onnxruntime on the 128 held-out eval inputs
MIN_COSINE = {"fp16": 0.9999, "dynamic": 0.999, "int8": 0.98}


@pytest.mark.parametrize("mode", ["fp16", "dynamic", "int8"])
def test_encoder_builtin_ops_and_close_to_onnxruntime(encoder_reports, mode):
    """GELU via Erf, LayerNorm, MatMul, Softmax, int64 tokens: builtin ops only, and right."""
    rep = encoder_reports[mode]
    ops = set(rep["op_counts"])
    assert not [o for o in ops if "FLEX" in o.upper() or o.upper().startswith("CUSTOM")], ops
    assert {"BATCH_MATMUL", "SOFTMAX"} <= ops
    assert [t["dtype"] for t in rep["inputs"]] == ["int64", "int64"]  # token ids and mask stay integer
    fid = rep["fidelity"]  # the float TFLite against onnxruntime, before quantization
    assert fid["max_rel_error"] <= fid["tolerance"] and fid["cosine"] > 0.9999
    assert rep["accuracy"]["vs_float"]["cosine"] >= MIN_COSINE[mode]  # vs onnxruntime on the original .onnx
    if mode != "int8":
        assert fid["max_rel_error"] < 1e-5  # exact GELU (onnx2tf's erf polynomial), float graph as exported
    else:
        assert rep["float_ops"] == [] and "GELU" in ops  # all-integer compute; tanh-GELU fused to builtin GELU
        assert any("attention-mask constant" in n for n in rep["notes"])


def test_encoder_float_graph_from_direct_backend(encoder_reports):
    """tf_converter's layout heuristics mis-convert this encoder; the direct backend's graph is used."""
    assert any("flatbuffer_direct" in n for n in encoder_reports["fp16"]["notes"])


def test_int8_rewrite_stays_close_in_onnxruntime():
    """tanh-GELU and the clamped mask change the ONNX model's outputs by ~1e-4, not more."""
    import onnx
    import onnxruntime as ort

    from edgeq.sources.onnx.rewrites.int8 import rewrite_for_quantization

    model = onnx.load(ENCODER / "model.onnx")
    res = rewrite_for_quantization(model)
    assert res.tanh_gelu == 2 and res.mask_constants == 1
    assert not [n for n in model.graph.node if n.op_type == "Erf"]
    z = np.load(ENCODER / "eval.npz")
    feeds = {k: z[k] for k in z.files}
    a = ort.InferenceSession(str(ENCODER / "model.onnx")).run(None, feeds)[0]
    b = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    assert 0 < np.max(np.abs(a - b)) / np.max(np.abs(a)) < 1e-3


def test_corrupt_onnx_is_one_line(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf" * 10)
    res = cli("convert", bad, "--mode", "fp16", "--out", tmp_path / "o.tflite")
    one_line_error(res, "bad.onnx", "not a valid ONNX model")
    assert not (tmp_path / "o.tflite").exists()


def test_unsupported_op_is_named(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("CastLike", ["r", "x"], ["y"])],
                          "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "castlike.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    res = cli("convert", path, "--mode", "fp16", "--out", tmp_path / "o.tflite")
    one_line_error(res, "castlike.onnx", "CastLike")
    assert not (tmp_path / "o.tflite").exists()


def test_dynamic_sequence_needs_input_shape(cli, tmp_path):
    res = cli("convert", ENCODER / "model.onnx", "--mode", "fp16", "--out", tmp_path / "o.tflite")
    one_line_error(res, "input_ids", "--input-shape")
    res = cli("convert", ENCODER / "model.onnx", "--mode", "fp16", "--input-shape", "tokens=1,16",
              "--out", tmp_path / "o.tflite")
    one_line_error(res, "tokens", "input_ids")
    assert not (tmp_path / "o.tflite").exists()


def test_calibration_missing_input_or_wrong_shape(encoder, cli, tmp_path):
    z = np.load(ENCODER / "calib.npz")
    np.savez(tmp_path / "only_ids.npz", input_ids=z["input_ids"])
    np.savez(tmp_path / "short.npz", input_ids=z["input_ids"][:, :8], attention_mask=z["attention_mask"][:, :8])
    out = tmp_path / "o.tflite"
    res = cli("convert", ENCODER / "model.onnx", "--mode", "int8", "--calib", tmp_path / "only_ids.npz", *SEQ,
              "--out", out)
    one_line_error(res, "only_ids.npz", "attention_mask")
    res = cli("convert", ENCODER / "model.onnx", "--mode", "int8", "--calib", tmp_path / "short.npz", *SEQ,
              "--out", out)
    one_line_error(res, "short.npz", "input_ids", "(64, 8)")
    assert not out.exists()


def test_fidelity_failure_stops_before_quantization(fashion_int8, onnx_loads):
    from edgeq.errors import ConversionError
    from edgeq.sources.onnx.fidelity import check_fidelity

    _, out, _ = fashion_int8
    fm = next(m for k, m in onnx_loads.models.items() if "fashion_torch" in k[0])
    z = np.load(FASHION / "calib.npz")
    feeds = {"image": z["image"][:16].transpose(0, 2, 3, 1)}
    settings_bytes = _fp32_bytes(fm)
    ok = check_fidelity(settings_bytes, fm.predict, feeds, "m.onnx", "calibration")
    assert ok.ok and ok.max_rel_error < 1e-3
    with pytest.raises(ConversionError, match="disagrees with onnxruntime before quantization"):
        check_fidelity(settings_bytes, lambda f: [o * 1.5 for o in fm.predict(f)], feeds, "m.onnx", "calibration")


def _fp32_bytes(fm) -> bytes:
    from edgeq.modes import IOType, Mode
    from edgeq.quantize.converter import ConverterSettings, make_converter, run_converter

    settings = ConverterSettings(mode=Mode.FP32, io=IOType.FLOAT32)
    return run_converter(make_converter(fm.saved_model_dir, settings), settings, str(fm.source))


def test_erf_gelu_rewrite_keeps_onnxruntime_outputs():
    import onnx
    import onnxruntime as ort

    from edgeq.sources.onnx.rewrites.erf_gelu import reorder_erf_gelu

    model = onnx.load(ENCODER / "model.onnx")
    res = reorder_erf_gelu(model)
    assert res.gelu == 2 and res.other_erf == 0
    z = np.load(ENCODER / "eval.npz")
    feeds = {k: z[k] for k in z.files}
    a = ort.InferenceSession(str(ENCODER / "model.onnx")).run(None, feeds)[0]
    b = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
