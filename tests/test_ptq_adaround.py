"""Learned weight rounding (``--ptq learned``'s adaround step): the converter writes exactly the learned
integers, the model stays all-integer with int8 I/O, and the step is judged on calibration samples it
did not fit on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import calibrate_keras

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _small_model():
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    y = keras.layers.Conv2D(12, 1, activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(5)(y))


@pytest.fixture(scope="module")
def small():
    model = _small_model()
    x = np.random.default_rng(0).uniform(-1, 1, (32, 12, 12, 3)).astype(np.float32)
    cal, feeds = calibrate_keras(model, x, int8_io=True)
    return model, cal, feeds


def _int8_weights(content: bytes) -> dict[str, np.ndarray]:
    """Output tensor name -> int8 weight of each conv/depthwise/dense op of a quantized model."""
    from edgeq.tflite import flatbuffer as fb

    model = fb.load(content)
    sg, names = model.subgraphs[0], fb.op_names(model)
    out = {}
    for op in sg.operators:
        if names[op.opcodeIndex] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            t = sg.tensors[int(op.inputs[1])]
            out[fb.tensor_name(sg, int(op.outputs[0]))] = np.frombuffer(
                bytes(model.buffers[t.buffer].data), np.int8).reshape(list(t.shape))
    return out


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


def test_converter_writes_the_learned_integers_all_integer_int8_io(small):
    from edgeq.modelinfo import inspect_tflite
    from edgeq.quantize.prepare.adaround import adaround

    _, cal, feeds = small
    plain = cal.quantize()
    content, learned = adaround(cal.content, plain, feeds)
    assert learned  # this model's layers all gain on their own objective
    out = type(cal)(content, cal.per_channel, cal.io, cal.source).quantize()
    got, nearest = _int8_weights(out), _int8_weights(plain)
    assert set(learned) <= set(got)
    differs = 0
    for name, q in learned.items():
        np.testing.assert_array_equal(got[name], q)  # exactly the learned integers ...
        differs += int(np.sum(got[name] != nearest[name]))
    assert differs > 0  # ... which are not the converter's nearest rounding
    info = inspect_tflite(content=out)
    assert info.fully_integer and not info.float_ops
    assert all(t.dtype == "int8" for t in info.inputs + info.outputs)


def test_step_is_judged_on_held_back_samples_and_never_lowers_them(small):
    from edgeq.data import Dataset
    from edgeq.modes import PtqChoice
    from edgeq.progress import Silent
    from edgeq.quantize.prepare.adaround import AdaRoundStep
    from edgeq.quantize.prepare.ptq import PtqPlan, _Measure, _Run

    model, cal, feeds = small
    name, x = next(iter(feeds.items()))
    m = _Measure(None, Dataset(inputs={name: x}, labels=None, source=Path("calib.npz")),
                 [model.predict(x, verbose=0)], Path("test.keras"), Silent())
    plain = cal.quantize()
    plan = PtqPlan(PtqChoice.LEARNED)
    fit, held = m.split()
    run = _Run(plan, fit, held, "held-back", plain, Silent())
    run.step(AdaRoundStep(), cal, lambda c: c.quantize())
    step = plan.steps[-1]
    assert step.name == "adaround" and step.judged_on == "held-back" and step.seconds is not None
    assert len(held.reference[0]) == 8  # every 4th of 32 samples
    assert held.score(run.best_bytes).sqnr_db >= held.score(plain).sqnr_db
    assert "s" in plan.summary.split("adaround")[1]  # the summary shows the step's time


def test_ptq_learned_through_the_cli_reports_the_step_and_stays_all_integer(cli, cnn, tmp_path):
    """``--ptq learned`` end to end: the report's ptq plan ends with the adaround step, judged on held-back
    samples with its seconds, and the model is full INT8 with int8 I/O; ``--ptq auto`` has no such step."""
    import json

    out = tmp_path / "learned.tflite"
    res = cli("convert", cnn.keras, "--mode", "int8", "--ptq", "learned", "--calib", cnn.calib,
              "--calib-samples", "64", "--out", out, "--json")
    assert res.code == 0, res.err
    rep = json.loads(res.out)
    steps = rep["ptq"]["steps"]
    assert steps[-1]["name"] == "adaround" and steps[-1]["judged_on"] == "held-back" and steps[-1]["seconds"] > 0
    assert rep["fully_integer"] and [t["dtype"] for t in rep["inputs"]] == ["int8"]
    res = cli("convert", cnn.keras, "--mode", "int8", "--calib", cnn.calib, "--calib-samples", "64",
              "--out", tmp_path / "auto.tflite", "--json")
    assert res.code == 0 and "adaround" not in [s["name"] for s in json.loads(res.out)["ptq"]["steps"]]
