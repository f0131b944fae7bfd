"""Learned rounding with bias correction, layer by layer on the INT8 model's own inputs (``sequential_rounding``,
the last step of ``--ptq auto``): the integers edited in place are the converter's, the model stays
all-integer with int8 I/O, and the step is judged on calibration samples it did not fit on."""
from __future__ import annotations

from pathlib import Path

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
    return model, cal, feeds


@pytest.fixture(scope="module")
def rounded(deep):
    from edgeq.quantize.prepare.sequential_rounding import corrected

    _, cal, feeds = deep
    return corrected(cal, feeds)


def _layer_ints(content: bytes) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Output tensor name -> (int8 weight, int32 or int64 bias) of each conv/depthwise/dense op of a quantized
    model."""
    from edgeq.tflite import flatbuffer as fb

    model = fb.load(content)
    sg, names = model.subgraphs[0], fb.op_names(model)
    out = {}
    for op in sg.operators:
        if names[op.opcodeIndex] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = fb.raw_data(model, sg.tensors[int(op.inputs[1])]).view(np.int8)
            t = sg.tensors[int(op.inputs[2])] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            b = None if t is None else fb.raw_data(model, t).view({fb.INT32: np.int32, fb.INT64: np.int64}[t.type])
            out[fb.tensor_name(sg, int(op.outputs[0]))] = (w, b)
    return out


def _sqnr(reference: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10((reference ** 2).sum() / ((reference - y) ** 2).sum()))


def test_learned_rounding_keeps_the_grid_and_beats_nearest_on_its_objective():
    from edgeq.quantize.prepare.adaround import _keep_grid, learn_rounding, objective

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 16))  # correlated inputs: nearest is not optimal
    h, c = x.T @ x / len(x), np.zeros((16, 16))
    w = rng.normal(size=(4, 16))
    s = np.abs(w).max(1) / 127
    q = learn_rounding(w, s, h, c)
    nearest = _keep_grid(np.round(w / s[:, None]), w / s[:, None])
    assert np.all((q == np.floor(w / s[:, None])) | (q == np.ceil(w / s[:, None])) | (np.abs(q) == 127))
    assert np.all(np.abs(q).max(1) == 127)  # the per-channel scale the quantizer recomputes is unchanged
    assert objective(q, w, s, h, c) < objective(nearest, w, s, h, c)


def test_integers_written_in_place_are_the_converters_and_differ_from_nearest(deep, rounded):
    """The loop measures every layer on an INT8 model edited in its bytes; the converter, quantizing the edited
    calibrated model once at the end, must write exactly those weights and biases."""
    from edgeq.modelinfo import inspect_tflite

    _, cal, _ = deep
    assert rounded is not None and rounded.layers == 6  # five conv/depthwise layers and the Dense head
    final, plain = _layer_ints(rounded.content), _layer_ints(cal.quantize())
    moved_w = moved_b = 0
    for name in rounded.in_place.weights:
        w, b = rounded.in_place.ints(name)
        np.testing.assert_array_equal(final[name][0], w)
        np.testing.assert_array_equal(final[name][1], b)
        moved_w += int(np.sum(w != plain[name][0]))
        moved_b += int(np.sum(b != plain[name][1]))
    assert moved_w > 0 and moved_b > 0  # learned rounding and bias correction both changed integers
    info = inspect_tflite(content=rounded.content)
    assert info.fully_integer and not info.float_ops
    assert {t.dtype for t in info.inputs + info.outputs} == {"int8"}


def _tensor(content: bytes, feeds, name: str) -> np.ndarray:
    """Tensor ``name`` of a float or INT8 model on every sample, as float (dequantized)."""
    from edgeq.quantize.prepare.activations import TensorTable, int_feeds, run_each_sample

    table = TensorTable.of(content)
    i = table.index[name]
    return np.stack([table.real(i, v[i]) for v in run_each_sample(content, int_feeds(content, feeds), [i])])


def test_error_of_the_last_conv_against_float_falls(deep, rounded):
    """Measured inside the network (the output, a 6-value average, is at its int8 grid floor). The toy loses
    little to INT8; the zoo's EfficientNets are where the step matters (docs/ptq.md)."""
    _, cal, feeds = deep
    last = list(rounded.in_place.weights)[-2]  # the last conv (the Dense head comes after the pooling)
    want = _tensor(cal.content, feeds, last)
    plain, fixed = _tensor(cal.quantize(), feeds, last), _tensor(rounded.content, feeds, last)
    assert _sqnr(want, fixed) > _sqnr(want, plain) + 0.5, (_sqnr(want, plain), _sqnr(want, fixed))  # 37.6 -> 38.5 dB


def test_step_is_judged_on_held_back_samples_and_never_lowers_them(deep):
    from edgeq.data import Dataset
    from edgeq.modes import PtqChoice
    from edgeq.progress import Silent
    from edgeq.quantize.prepare.ptq import PtqPlan, _Measure, _Run
    from edgeq.quantize.prepare.sequential_rounding import SequentialRoundingStep

    model, cal, feeds = deep
    name, x = next(iter(feeds.items()))
    m = _Measure(None, Dataset(inputs={name: x}, labels=None, source=Path("calib.npz")),
                 [model.predict(x, verbose=0)], Path("test.keras"), Silent())
    plain = cal.quantize()
    plan = PtqPlan(PtqChoice.AUTO)
    fit, held = m.split()
    run = _Run(plan, fit, held, "held-back", plain, Silent())
    run.step(SequentialRoundingStep(), cal, lambda c: c.quantize())
    step = plan.steps[-1]
    assert step.name == "sequential_rounding" and step.judged_on == "held-back" and step.seconds is not None
    assert len(held.reference[0]) == 12  # every 4th of 48 samples
    assert held.score(run.best_bytes).sqnr_db >= held.score(plain).sqnr_db
    assert "s" in plan.summary.split("sequential_rounding")[1]  # the summary shows the step's time


def test_ptq_learned_through_the_cli_reports_the_steps_and_stays_all_integer(cli, cnn, tmp_path):
    """``--ptq learned`` end to end: range search, then learned rounding last, both judged on held-back samples
    with their seconds, and the model is full INT8 with int8 I/O; ``--ptq auto`` has the rounding step only."""
    import json

    out = tmp_path / "learned.tflite"
    res = cli("convert", cnn.keras, "--mode", "int8", "--ptq", "learned", "--calib", cnn.calib,
              "--calib-samples", "64", "--out", out, "--json")
    assert res.code == 0, res.err
    rep = json.loads(res.out)
    steps = rep["ptq"]["steps"]
    assert [s["name"] for s in steps[-2:]] == ["range_search", "sequential_rounding"]
    assert steps[-1]["judged_on"] == "held-back" and steps[-1]["seconds"] > 0
    assert rep["fully_integer"] and [t["dtype"] for t in rep["inputs"]] == ["int8"]
    res = cli("convert", cnn.keras, "--mode", "int8", "--calib", cnn.calib, "--calib-samples", "64",
              "--out", tmp_path / "auto.tflite", "--json")
    names = [s["name"] for s in json.loads(res.out)["ptq"]["steps"]]
    assert res.code == 0 and names[-1] == "sequential_rounding" and "range_search" not in names


@pytest.fixture(scope="module")
def deep_16x8(deep):
    """``deep`` calibrated by TensorFlow's 16x8 calibrator, as ``--mode int16x8`` prepares it."""
    from edgeq.convert import representative_data
    from edgeq.data import Dataset
    from edgeq.progress import Silent
    from edgeq.quantize.int16x8 import calibrate_16x8

    model, cal, feeds = deep
    rep = representative_data(Dataset(inputs=feeds, labels=None, source=Path("calib.npz")), Silent())
    return model, cal.with_content(calibrate_16x8(cal.content, rep)), feeds


def _to_16x8(cal) -> bytes:
    from edgeq.quantize.int16x8 import quantize_calibrated_16x8

    return quantize_calibrated_16x8(cal.content)


@pytest.fixture(scope="module")
def rounded_16x8(deep_16x8):
    from edgeq.quantize.prepare.sequential_rounding import corrected

    _, cal, feeds = deep_16x8
    return corrected(cal, feeds, quantize=_to_16x8, float_stand_in=True)


def _dequantized_layers(content: bytes) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Output name (a 16x8 output layer's '_int16' suffix dropped) -> (weight, bias, bias step) as float."""
    from edgeq.tflite import flatbuffer as fb

    model = fb.load(content)
    sg, names = model.subgraphs[0], fb.op_names(model)
    out = {}
    for name, (w, b) in _layer_ints(content).items():
        op = next(o for o in sg.operators if fb.tensor_name(sg, int(o.outputs[0])) == name)
        ws = np.asarray(sg.tensors[int(op.inputs[1])].quantization.scale, np.float64)
        shape = sg.tensors[int(op.inputs[1])].shape
        axis = 3 if names[op.opcodeIndex] == "DEPTHWISE_CONV_2D" else 0
        w = w.reshape(shape).astype(np.float64) * ws.reshape([-1 if i == axis else 1 for i in range(len(shape))])
        step = float(sg.tensors[int(op.inputs[0])].quantization.scale[0]) * ws
        out[name.removesuffix("_int16")] = (w, None if b is None else b * step, step)
    return out


def test_16x8_fits_on_the_float_stand_in_and_the_quantizer_writes_what_was_fitted(deep_16x8, rounded_16x8):
    """--mode int16x8 fits the layers on the float model with the weights rounded so far (LiteRT runs 16x8 on
    slow reference kernels). The weights written there are on the int8 grid, so TensorFlow's 16x8 quantizer
    writes exactly them, and the biases to half an int64 step."""
    from edgeq.tflite import flatbuffer as fb

    _, cal, _ = deep_16x8
    stand_in = rounded_16x8.in_place
    assert rounded_16x8.layers == 6  # the Dense head too (in the 16x8 model it writes '<name>_int16')
    final, plain = _dequantized_layers(rounded_16x8.content), _dequantized_layers(_to_16x8(cal))
    moved_w = moved_b = 0
    for name, buffer in stand_in.weights.items():
        fitted = fb.buffer_in_place(stand_in.content, buffer).view(np.float32).astype(np.float64)
        w, b, step = final[name]
        np.testing.assert_allclose(w.ravel(), fitted, rtol=1e-6, atol=1e-12)
        moved_w += int(np.sum(~np.isclose(w, plain[name][0], rtol=1e-6, atol=1e-12)))
        if name in stand_in.biases:
            bias = fb.buffer_in_place(stand_in.content, stand_in.biases[name]).view(np.float32)
            assert np.all(np.abs(b - bias) <= step / 2 + 1e-9)
            moved_b += int(np.sum(b != plain[name][1]))
    assert moved_w > 0 and moved_b > 0
    model = fb.load(rounded_16x8.content)
    assert any(t.type == fb.INT16 for t in model.subgraphs[0].tensors)  # int16 activations
    assert any(t.type == fb.INT64 for t in model.subgraphs[0].tensors)  # 16x8 biases


def test_16x8_error_of_the_last_conv_against_float_falls(deep_16x8, rounded_16x8):
    """int16 activations lose almost nothing: the rounding of the int8 weights is what the fit improves on."""
    _, cal, feeds = deep_16x8
    last = list(rounded_16x8.in_place.weights)[-2]  # the last conv
    want = _tensor(cal.content, feeds, last)
    plain, fixed = _tensor(_to_16x8(cal), feeds, last), _tensor(rounded_16x8.content, feeds, last)
    assert _sqnr(want, fixed) > _sqnr(want, plain) + 2.0, (_sqnr(want, plain), _sqnr(want, fixed))  # 42.9 -> 46.7 dB
