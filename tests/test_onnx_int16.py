"""int16x8 (16-bit activations, 8-bit weights) on graphs TensorFlow's own 16x8 quantizer cannot take.

TF's 16x8 path failed on token-id encoders ("Max and min for dynamic tensors should be recorded during
calibration: Failed for tensor Cast") and gave SUM its input's scale, so a masked token count saturated
at 1 (see edgeq/quantize/int16x8.py). Small TF graphs pin each cause; the tiny PyTorch encoder pins the
whole ONNX road: it runs in LiteRT, computes in int16 except mean pooling's DIV, and agrees with
onnxruntime.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import SAMPLES

ENCODER = SAMPLES / "tiny_encoder"
SHAPES = {"input_ids": (1, 16), "attention_mask": (1, 16)}


def _fp32(fn, where) -> bytes:
    """FP32 TFLite of a tf.function, through a SavedModel so it has a signature keyed by argument names."""
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    module = tf.Module()
    module.fn = fn
    tf.saved_model.save(module, str(where), signatures={"serving_default": fn.get_concrete_function()})
    return tf.lite.TFLiteConverter.from_saved_model(str(where)).convert()


def _run(content: bytes, feeds: list[dict]) -> np.ndarray:
    from edgeq.modelinfo import open_interpreter

    runner = open_interpreter(content=content).get_signature_runner()
    return np.concatenate([np.asarray(next(iter(runner(**f).values())), np.float64) for f in feeds])


def _op_types(content: bytes) -> dict[str, set[str]]:
    """Op name -> the dtypes of its non-constant tensors, for every op in the model."""
    from edgeq.modelinfo import open_interpreter

    interp = open_interpreter(content=content)
    dtype = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001
    produced = {o for op in ops for o in op["outputs"]} | {d["index"] for d in interp.get_input_details()}
    kinds: dict[str, set[str]] = {}
    for op in ops:
        acts = [i for i in op["inputs"] if i in produced] + list(op["outputs"])
        kinds.setdefault(op["op_name"], set()).update(dtype[i] for i in acts)
    return kinds


def test_sum_keeps_its_own_range(tmp_path):
    """A token count (sum of a 0/1 mask) must not saturate at the input's range of 1."""
    from edgeq.quantize.int16x8 import quantize_16x8, sum_as_mean
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    fn = tf.function(lambda m: tf.reduce_sum(m, axis=1, keepdims=True) + 0.0,
                     input_signature=[tf.TensorSpec([1, 16], tf.float32)])
    fp32 = _fp32(fn, tmp_path / "sm")
    rewritten, n = sum_as_mean(fp32)
    assert n == 1 and "SUM" not in _op_types(rewritten) and {"MEAN", "MUL"} <= set(_op_types(rewritten))
    rng = np.random.default_rng(0)
    masks = [{"m": (np.arange(16) < k).astype(np.float32)[None]} for k in rng.integers(1, 17, 40)]
    want = np.array([[f["m"].sum()] for f in masks])
    np.testing.assert_allclose(_run(rewritten, masks), want, rtol=1e-6)  # the same function in float
    q = quantize_16x8(fp32, lambda: iter(masks))
    assert "int16" in _op_types(q)["MEAN"]
    np.testing.assert_allclose(_run(q, masks), want, rtol=0.01)


def _shared_buffer_types(content: bytes) -> set[int]:
    """Tensor types of constants that share their buffer with another constant."""
    from collections import Counter

    from tensorflow.lite.tools import flatbuffer_utils as fu

    m = fu.convert_bytearray_to_object(bytearray(content))
    consts = [t for t in m.subgraphs[0].tensors if t.buffer and m.buffers[t.buffer].data is not None]
    uses = Counter(t.buffer for t in consts)
    return {t.type for t in consts if uses[t.buffer] > 1}


def test_integer_token_path_stays_integer(tmp_path):
    """Token ids through CAST/LESS/SELECT (negative-index handling) into GATHER: TF's 16x8 quantizer
    demanded calibrated ranges for those integer tensors; edgeq quantizes the float part only. The int32 0
    of ``i < 0`` and the float 0.0 of ``minimum`` share one deduplicated buffer in the FP32 model, which
    the quantizer must not rewrite under the integer tensor."""
    from edgeq.quantize.int16x8 import quantize_16x8
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    table = tf.constant(np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32))

    def embed(ids):
        i = tf.cast(ids, tf.int32)
        i = tf.where(i < 0, i + 50, i)
        return tf.reduce_mean(tf.minimum(tf.gather(table, i), 0.0), axis=1)

    fn = tf.function(embed, input_signature=[tf.TensorSpec([1, 6], tf.int64)])
    rng = np.random.default_rng(2)
    feeds = [{"ids": rng.integers(0, 50, (1, 6)).astype(np.int64)} for _ in range(30)]
    fp32 = _fp32(fn, tmp_path / "sm")
    assert len(_shared_buffer_types(fp32)) == 2  # an int32 and a float32 constant on one buffer
    q = quantize_16x8(fp32, lambda: iter(feeds))
    kinds = _op_types(q)
    assert {"CAST", "LESS", "SELECT_V2"} & set(kinds) and not any(
        "int16" in kinds[o] for o in ("CAST", "LESS", "SELECT", "SELECT_V2") if o in kinds)  # integer ops untouched
    assert "int16" in kinds["GATHER"] and "int16" in kinds["MEAN"]
    want, got = _run(fp32, feeds), _run(q, feeds)
    assert np.abs(got - want).max() <= 0.01 * np.abs(want).max()


def test_same_model_as_tfliteconverter_where_its_16x8_works(cnn):
    """On a CNN (no integer tensors, no SUM) the model computes exactly what TFLiteConverter's 16x8 gives."""
    from edgeq.convert import representative_data
    from edgeq.data import load_dataset
    from edgeq.modes import IOType, Mode
    from edgeq.progress import Silent
    from edgeq.quantize.converter import ConverterSettings, make_converter
    from edgeq.quantize.int16x8 import quantize_16x8
    from edgeq.runtime import TFLiteRunner
    from edgeq.sources import load_float_model

    with load_float_model(cnn.keras) as fm:
        calib = load_dataset(cnn.calib, fm.inputs, limit=50)
        data = load_dataset(cnn.eval, fm.inputs, limit=200)
        fp32 = make_converter(fm.saved_model_dir, ConverterSettings(Mode.FP32, IOType.FLOAT32)).convert()
        public = make_converter(fm.saved_model_dir, ConverterSettings(Mode.INT16X8, IOType.FLOAT32),
                                representative_data(calib, Silent())).convert()
        ours = quantize_16x8(fp32, representative_data(calib, Silent()))
    assert len(ours) == len(public)  # only the converter's metadata bytes may differ
    np.testing.assert_array_equal(TFLiteRunner(content=ours).run(data.inputs)[0],
                                  TFLiteRunner(content=public).run(data.inputs)[0])


@pytest.fixture(scope="module")
def encoder16(tmp_path_factory):
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    out = tmp_path_factory.mktemp("int16") / "encoder_int16x8.tflite"
    rep = convert(ENCODER / "model.onnx", ConvertOptions(mode=Mode.INT16X8, calib=ENCODER / "calib.npz"), out=out,
                  eval_data=ENCODER / "eval.npz", source_options={"input_shapes": SHAPES})
    return rep.to_dict(), out


def test_encoder_int16x8_runs_in_int16_and_agrees_with_onnxruntime(encoder16):
    import onnxruntime as ort

    rep, out = encoder16
    content = out.read_bytes()
    kinds = _op_types(content)
    assert [t["dtype"] for t in rep["inputs"]] == ["int64", "int64"]  # token ids and mask stay integer
    for op in ("FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "MEAN", "GELU", "RSQRT"):
        assert kinds[op] <= {"int16", "int32"} and "int16" in kinds[op], (op, kinds[op])
    assert not {"SUM", "FlexErf"} & set(kinds)
    # Only mean pooling's division computes in float (LiteRT has no int16 DIV), fed by two DEQUANTIZEs.
    assert sorted(o.split()[0] for o in rep["float_ops"]) == ["DEQUANTIZE", "DEQUANTIZE", "DIV"]
    fid = rep["fidelity"]
    assert fid["max_rel_error"] <= fid["tolerance"]
    vs = rep["accuracy"]["vs_float"]  # against onnxruntime on the original .onnx, 128 held-out inputs
    assert vs["cosine"] >= 0.999 and vs["sqnr_db"] >= 30  # SQNR sees scale: the saturated SUM scored < 0 dB
    ev = np.load(ENCODER / "eval.npz")
    sess = ort.InferenceSession(str(ENCODER / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = [{k: ev[k][i:i + 1] for k in ev.files} for i in range(0, len(ev["input_ids"]), 8)]
    want = np.concatenate([sess.run(None, f)[0] for f in feeds]).astype(np.float64)
    got = _run(content, feeds)
    ratio = np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert np.all(np.abs(ratio - 1) < 0.05)  # every embedding has the right length, not just direction
    assert rep["size_bytes"] < 0.7 * rep["float_size_bytes"]
