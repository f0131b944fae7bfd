"""--fallback int16: the INT8 -> 16x8 op rewrite, against TensorFlow's own 16x8 model, and what LiteRT refuses.

One small CNN (conv, depthwise, add, pools, concat, mean, dense, softmax) converted once per module: its
calibrated float model (what --mode mixed quantizes) and TFLiteConverter's 16x8 and FP32 models.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def tiny():
    import keras  # Keras 3: once onnx2tf is imported, tf.keras resolves to Keras 2 (tf_keras)

    from edgeq.convert import representative_data
    from edgeq.data import Dataset
    from edgeq.modes import IOType, Mode
    from edgeq.progress import Silent
    from edgeq.quantize.converter import ConverterSettings, make_converter, run_converter
    from edgeq.quantize.selective import Calibrated
    from edgeq.sources.keras import from_keras_object

    keras.utils.set_random_seed(0)
    L = keras.layers
    i = keras.Input((16, 16, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu")(i)
    x = L.Add()([x, L.DepthwiseConv2D(3, padding="same")(x)])
    x = L.MaxPooling2D(2)(L.AveragePooling2D(2)(x))
    x = L.Conv2D(16, 1)(x)
    x = L.Concatenate()([x, L.Conv2D(4, 1)(x)])
    x = L.Softmax()(L.Dense(10)(L.GlobalAveragePooling2D()(x)))
    model = keras.Model(i, x)
    data = np.random.default_rng(0).standard_normal((64, 16, 16, 3)).astype(np.float32)
    with from_keras_object(model, Path("tiny.keras")) as fm:
        name = fm.inputs[0].name
        rep = representative_data(Dataset(inputs={name: data}, labels=None, source=Path("calib.npz")), Silent())
        cal = Calibrated.from_saved_model(fm.saved_model_dir, rep, True, IOType.FLOAT32, "tiny")
        made = {}
        for mode in (Mode.INT16X8, Mode.FP32):
            settings = ConverterSettings(mode=mode, io=IOType.FLOAT32)
            made[mode] = run_converter(make_converter(fm.saved_model_dir, settings, rep), settings, "tiny")
    return cal, {name: data}, made[Mode.INT16X8], made[Mode.FP32]


def _run(content: bytes, feeds) -> np.ndarray:
    from edgeq.runtime import TFLiteRunner

    return TFLiteRunner(content=content).run(feeds)[0]


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def _all_integer(content: bytes) -> bool:
    from edgeq.modelinfo import inspect_tflite

    return not inspect_tflite(content=content).float_ops


def test_every_op_at_16_bits_matches_tensorflows_16x8_model(tiny):
    from edgeq.quantize.int16_fallback import float_biases, to_int16

    cal, feeds, i16, f32 = tiny
    int8 = cal.quantize()
    rw = to_int16(int8, [layer.node for layer in cal.layers()], float_biases(cal.content))
    assert len(rw.int16_nodes) == len(cal.layers())  # every op of this model has an int16 kernel
    assert _all_integer(rw.content)
    ours, theirs, ref = _run(rw.content, feeds), _run(i16, feeds), _run(f32, feeds)
    assert np.max(np.abs(ours - theirs)) < 1e-3  # softmax probabilities
    assert _rel(ours, ref) < _rel(_run(int8, feeds), ref) / 3


def test_one_layer_at_16_bits_is_close_to_the_16x8_layer_and_borders_stay_integer(tiny):
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.modelinfo import inspect_tflite
    from edgeq.quantize.int16_fallback import SUFFIX_16, float_biases, to_int16

    cal, feeds, i16, _ = tiny
    layers = cal.layers()
    first, dense = layers[0], next(layer for layer in layers if layer.op == "FULLY_CONNECTED")
    rw = to_int16(cal.quantize(), [first.node, dense.node], float_biases(cal.content))
    info = inspect_tflite(content=rw.content)
    assert not info.float_ops and rw.int16_nodes == (first.node, dense.node)
    # the first conv reads the float input (quantized straight to int16), its int8 readers get an int16 -> int8
    # QUANTIZE; the dense layer reads the int8 MEAN: widened by CAST + ADD, its output QUANTIZEd for SOFTMAX
    assert info.op_counts.get("CAST") == 1 and info.op_counts["QUANTIZE"] >= 4
    x = next(iter(feeds.values()))[:8]

    def layer_out(content: bytes, name: str) -> np.ndarray:
        it = Interpreter(model_content=content, experimental_preserve_all_tensors=True)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        t = next(t for t in it.get_tensor_details() if t["name"] == name)
        outs = []
        for k in range(len(x)):
            it.set_tensor(d["index"], x[k:k + 1])
            it.invoke()
            scale, zp = t["quantization"]
            outs.append((it.get_tensor(t["index"]).astype(np.float64) - zp) * scale)
        return np.concatenate(outs)

    ours, theirs = layer_out(rw.content, first.node + SUFFIX_16), layer_out(i16, first.node)
    assert np.max(np.abs(ours - theirs)) < 2e-3 * np.max(np.abs(theirs))  # a few int16 steps


def test_litert_refuses_int8_to_int16_quantize_and_int16_hard_swish(tiny):
    """The two refusals the rewrite works around or avoids; a LiteRT that accepts them fails this test."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.quantize.int16_fallback import to_int16
    from edgeq.tflite import flatbuffer

    cal, feeds, _, _ = tiny
    dw = next(layer for layer in cal.layers() if layer.op == "DEPTHWISE_CONV_2D")
    soft = next(layer for layer in cal.layers() if layer.op == "SOFTMAX")
    content = to_int16(cal.quantize(), [dw.node, soft.node]).content
    s = flatbuffer.schema()

    def refused(edit) -> str:
        model = flatbuffer.load(content)
        edit(model, model.subgraphs[0], flatbuffer.op_names(model))
        it = Interpreter(model_content=flatbuffer.dump(model))
        with pytest.raises(RuntimeError) as err:
            it.allocate_tensors()
            d = it.get_input_details()[0]
            it.set_tensor(d["index"], next(iter(feeds.values()))[:1])
            it.invoke()
        return str(err.value)

    def quantize_up(model, sg, names):  # the CAST + ADD widening replaced by one int8 -> int16 QUANTIZE
        k = next(k for k, op in enumerate(sg.operators) if names[op.opcodeIndex] == "CAST")
        cast, add = sg.operators[k], sg.operators[k + 1]
        cast.opcodeIndex = flatbuffer.opcode_index(model, s.BuiltinOperator.QUANTIZE)
        cast.outputs = add.outputs
        del sg.operators[k + 1]

    def hard_swish(model, sg, names):  # the int16 SOFTMAX made a HARD_SWISH (same int16 input and output)
        op = next(op for op in sg.operators if names[op.opcodeIndex] == "SOFTMAX")
        op.opcodeIndex = flatbuffer.opcode_index(model, s.BuiltinOperator.HARD_SWISH)
        op.builtinOptionsType, op.builtinOptions = 0, None

    assert "kTfLiteInt8" in refused(quantize_up) and "QUANTIZE" in refused(quantize_up)
    assert "got INT16" in refused(hard_swish)


def test_ops_without_int16_kernel_and_unknown_nodes_stay_int8(tiny):
    from edgeq.quantize.int16_fallback import to_int16

    cal, _, _, _ = tiny
    int8 = cal.quantize()
    assert to_int16(int8, ["no such tensor"]).content == int8
    assert to_int16(int8, []).int16_nodes == ()


def test_int16_fallback_defaults_to_int8_io():
    from edgeq import ConvertOptions
    from edgeq.modes import IOType

    assert ConvertOptions(mode="mixed", fallback="int16").io_type is IOType.INT8
    assert ConvertOptions(mode="mixed").io_type is IOType.FLOAT32
    assert ConvertOptions(mode="mixed", fallback="int16", io="float32").io_type is IOType.FLOAT32


def test_the_other_listed_ops_run_at_16_bits_all_integer():
    """Every op of INT16_OPS the CNN above lacks, moved to int16 one at a time (with its neighbours): it runs
    in LiteRT, stays all-integer and is not worse than INT8."""
    import keras  # Keras 3: once onnx2tf is imported, tf.keras resolves to Keras 2 (tf_keras)

    from tests.conftest import calibrate_keras

    from edgeq.quantize.int16_fallback import INT16_OPS, float_biases, to_int16
    from edgeq.tflite import flatbuffer

    keras.utils.set_random_seed(1)
    L = keras.layers
    i = keras.Input((8, 8, 4))
    x = L.LeakyReLU(0.1)(L.Conv2D(8, 1)(i))
    x = L.UpSampling2D(interpolation="bilinear")(x)[:, 1:, 1:, :]
    g = L.Activation("sigmoid")(x)
    x = L.Activation("tanh")(L.Multiply()([x, g]))
    x = L.ReLU()(L.Concatenate()([L.Subtract()([x, g]), x]))
    x = L.ReLU(6.0)(L.ZeroPadding2D(1)(x))
    x = L.Dense(5)(L.Reshape((-1,))(x))
    data = np.random.default_rng(1).standard_normal((32, 8, 8, 4)).astype(np.float32)
    cal, feeds = calibrate_keras(keras.Model(i, x), data)
    f32 = _run(cal.content, feeds)  # the calibrated model still computes in float
    int8 = cal.quantize()
    base = _rel(_run(int8, feeds), f32)
    model = flatbuffer.load(int8)
    names = flatbuffer.op_names(model)
    kinds = {names[op.opcodeIndex] for op in model.subgraphs[0].operators}
    wanted = {"LEAKY_RELU", "RESIZE_BILINEAR", "STRIDED_SLICE", "LOGISTIC", "MUL", "TANH", "SUB", "RELU",
              "CONCATENATION", "PAD", "RELU6", "FULLY_CONNECTED"}
    assert wanted <= kinds and wanted <= set(INT16_OPS)
    layers = cal.layers()
    moved = set()
    for k, layer in enumerate(layers):
        if layer.op not in wanted:
            continue
        rw = to_int16(int8, [n.node for n in layers[max(0, k - 1):k + 2]], float_biases(cal.content))
        moved |= {n for n in rw.int16_nodes if n == layer.node} and {layer.op}
        assert _all_integer(rw.content)
        assert _rel(_run(rw.content, feeds), f32) < 1.2 * base + 1e-3, layer.op
    assert moved == wanted
