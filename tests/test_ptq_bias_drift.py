"""Bias drift correction (``bias_drift``): the INT8 model's per-channel layer outputs are pulled back to the
float model's means, layer by layer, by shifting biases only; the model stays all-integer with int8 I/O."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import calibrate_keras

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _deep_model():
    """Six conv/depthwise layers in a chain, with channel scales wide enough that INT8 drifts."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    y = inp
    for filters in (8, 0, 16, 0, 16):
        layer = keras.layers.DepthwiseConv2D(3, padding="same") if filters == 0 else keras.layers.Conv2D(filters, 3, padding="same")
        y = keras.layers.ReLU(6.0)(layer(y))
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(6)(y))


@pytest.fixture(scope="module")
def deep():
    model = _deep_model()
    x = np.random.default_rng(0).uniform(-1, 1, (48, 16, 16, 3)).astype(np.float32)
    cal, feeds = calibrate_keras(model, x, int8_io=True)
    return cal, feeds


def _means(content, feeds, names):
    from edgeq.quantize.prepare.activations import int_feeds
    from edgeq.quantize.prepare.bias_drift import channel_means

    return channel_means(content, int_feeds(content, feeds), names)


def _drift(cal_content, quantized, feeds, names):
    f, q = _means(cal_content, feeds, names), _means(quantized, feeds, names)
    return {n: float(np.abs(f[n] - q[n]).mean()) for n in names}


def test_correction_pulls_each_layers_channel_means_back_to_float_by_biases_only(deep):
    from edgeq.modelinfo import inspect_tflite
    from edgeq.quantize.prepare.bias_drift import _biased_layers, corrected
    from edgeq.tflite import flatbuffer as fb

    cal, feeds = deep
    names = list(_biased_layers(fb.load(cal.content)))
    assert len(names) == 5  # the converter drops the Dense layer's zero bias; the others share one zero tensor
    edited, content, n = corrected(cal, feeds)
    assert n == 5
    before, after = _drift(cal.content, cal.quantize(), feeds, names), _drift(cal.content, content, feeds, names)
    assert sum(after.values()) < 0.5 * sum(before.values()), (before, after)
    # weights untouched: only the bias tensors of the six layers differ
    a, b = fb.load(cal.content), fb.load(edited.content)
    for (_, (k, _)) in _biased_layers(a).items():
        wa, wb = (fb.const(m, m.subgraphs[0], int(m.subgraphs[0].operators[k].inputs[1])) for m in (a, b))
        np.testing.assert_array_equal(wa, wb)
    info = inspect_tflite(content=content)
    assert info.fully_integer and {t.dtype for t in info.inputs + info.outputs} == {"int8"}


def test_correcting_all_layers_from_one_run_would_overshoot(deep):
    """Why the layers are corrected one after another: every layer also corrects the drift it inherits."""
    from edgeq.quantize.prepare.bias_drift import _biased_layers, corrected
    from edgeq.tflite import flatbuffer as fb

    cal, feeds = deep
    names = list(_biased_layers(fb.load(cal.content)))
    target, drift = _means(cal.content, feeds, names), _means(cal.quantize(), feeds, names)
    model = fb.load(cal.content)
    sg = model.subgraphs[0]
    for name, (k, b) in _biased_layers(model).items():
        new = (fb.const(model, sg, b) + target[name] - drift[name]).astype(np.float32)
        sg.operators[k].inputs[2] = fb.new_const(model, sg, b, new, "/at_once")
    at_once = cal.with_content(fb.dump(model)).quantize()
    _, sequential, _ = corrected(cal, feeds)
    last = names[-1]
    assert _drift(cal.content, sequential, feeds, [last])[last] < _drift(cal.content, at_once, feeds, [last])[last]


def test_writing_the_int8_bias_in_place_gives_the_converters_integers(deep):
    """The loop writes the INT8 model's int32 biases directly (no re-quantization per layer); the converter,
    given the same float bias in the calibrated model, writes the same integers."""
    from edgeq.quantize.prepare.bias_drift import _biased_layers, _Int8Biases
    from edgeq.tflite import flatbuffer as fb

    cal, _ = deep
    model = fb.load(cal.content)
    sg = model.subgraphs[0]
    name, (k, b) = list(_biased_layers(model).items())[2]
    bias = (fb.const(model, sg, b) + np.linspace(-0.3, 0.4, fb.const(model, sg, b).size)).astype(np.float32)
    patched = _Int8Biases(cal.quantize())
    assert patched.write(name, bias)
    sg.operators[k].inputs[2] = fb.new_const(model, sg, b, bias, "/t")
    requantized = _Int8Biases(cal.with_content(fb.dump(model)).quantize())

    def ints(p):
        return fb.buffer_in_place(p.content, p.biases[name][0]).view(np.int32).copy()

    before = ints(_Int8Biases(cal.quantize()))
    assert np.abs(ints(patched) - before).max() > 10  # the shift is many int32 steps
    np.testing.assert_array_equal(ints(patched), ints(requantized))
