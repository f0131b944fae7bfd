"""Channel equalization in the calibrated flatbuffer: the float function and the converter's recorded ranges
stay exact, only chains whose ops commute with a per-channel scale are touched, and ``--ptq auto`` gives a
SavedModel source the equalization that used to need the Keras graph."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import calibrate_keras

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _run(content: bytes, feeds: dict) -> np.ndarray:
    from edgeq.runtime import TFLiteRunner

    return TFLiteRunner(content=content).run(feeds)[0]


def _spread_model():
    """Conv(relu) -> pool -> Conv(relu) -> flatten -> Dense(relu) -> Dense, with the first conv's output
    channels scaled two decades apart (as a BN after ReLU leaves them once folded)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((10, 10, 2))
    c1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
    y = keras.layers.MaxPooling2D()(c1(inp))
    c2 = keras.layers.Conv2D(6, 3, padding="same", activation="relu")
    y = keras.layers.Flatten()(c2(y))
    y = keras.layers.Dense(16, activation="relu")(y)
    model = keras.Model(inp, keras.layers.Dense(4)(y))
    w, b = c1.get_weights()
    s = np.geomspace(0.05, 20, 8).astype(np.float32)
    c1.set_weights([w * s, b * s])
    w2, b2 = c2.get_weights()
    c2.set_weights([w2 / s[None, None, :, None], b2])  # the float function is what it was before the spread
    return model


@pytest.fixture(scope="module")
def spread():
    x = np.random.default_rng(1).uniform(0, 1, (40, 10, 10, 2)).astype(np.float32)
    model = _spread_model()
    cal, feeds = calibrate_keras(model, x, int8_io=True)
    return model, cal, feeds


def test_chains_cross_pooling_flatten_and_dense(spread):
    from edgeq.tflite import flatbuffer
    from edgeq.quantize.prepare.equalize_calibrated import find_chains

    _, cal, _ = spread
    model = flatbuffer.load(cal.content)
    names = flatbuffer.op_names(model)
    chains = find_chains(model, model.subgraphs[0], names)
    ops = model.subgraphs[0].operators
    pairs = [(names[ops[c.producer].opcodeIndex], names[ops[c.consumer].opcodeIndex]) for c in chains]
    # conv -> pool -> conv, conv -> (reshape) -> dense, dense -> dense: every pair of the model
    assert pairs == [("CONV_2D", "CONV_2D"), ("CONV_2D", "FULLY_CONNECTED"),
                     ("FULLY_CONNECTED", "FULLY_CONNECTED")]


def test_float_function_and_recorded_ranges_stay_exact(spread):
    from edgeq.tflite import flatbuffer
    from edgeq.quantize.prepare.equalize_calibrated import equalize_calibrated
    from edgeq.quantize.prepare.activations import run_each_sample

    model, cal, feeds = spread
    eq, n = equalize_calibrated(cal.content, feeds, alpha=0.5)
    assert n == 3
    ref = _run(cal.content, feeds)
    np.testing.assert_allclose(_run(eq, feeds), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))
    # every range written is what min/max calibration of the scaled model records
    from edgeq.quantize.prepare.equalize_calibrated import find_chains

    fb = flatbuffer.load(cal.content)
    scaled = [t for c in find_chains(fb, fb.subgraphs[0], flatbuffer.op_names(fb)) for t in c.tensors]
    assert len(scaled) == 5  # conv1, pool, conv2, flatten, dense1 outputs
    seen = {i: [np.inf, -np.inf] for i in scaled}
    for values in run_each_sample(eq, feeds, scaled):
        for i, v in values.items():
            seen[i] = [min(seen[i][0], float(v.min())), max(seen[i][1], float(v.max()))]
    sg = flatbuffer.load(eq).subgraphs[0]
    for i in scaled:
        q = sg.tensors[i].quantization
        assert seen[i] == pytest.approx([q.min[0], q.max[0]], rel=1e-4, abs=1e-6)


def test_equalized_int8_follows_float_more_closely(spread):
    from edgeq import metrics
    from edgeq.quantize.prepare.equalize_calibrated import equalize_calibrated

    model, cal, feeds = spread
    ref = _run(cal.content, feeds).astype(np.float64)
    plain = _run(cal.quantize(), feeds).astype(np.float64)
    eq = type(cal)(equalize_calibrated(cal.content, feeds, alpha=0.5)[0], cal.per_channel, cal.io, cal.source)
    got = _run(eq.quantize(), feeds).astype(np.float64)
    assert metrics.sqnr_db(ref, got) > metrics.sqnr_db(ref, plain) + 3


def test_relu6_and_residual_adds_are_left_alone():
    """relu6 does not commute with a scale; an ADD of two activations is not a per-channel constant."""
    from edgeq.tflite import flatbuffer
    from edgeq.quantize.prepare.equalize_calibrated import find_chains

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    a = keras.layers.Conv2D(4, 3, padding="same", activation="relu6")(inp)
    b = keras.layers.Conv2D(4, 1, activation="relu")(a)
    y = keras.layers.Add()([a, keras.layers.Conv2D(4, 1)(b)])
    model = keras.Model(inp, keras.layers.Conv2D(2, 1)(y))
    x = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 4)).astype(np.float32)
    cal, _ = calibrate_keras(model, x, int8_io=True)
    fb = flatbuffer.load(cal.content)
    names = flatbuffer.op_names(fb)
    chains = find_chains(fb, fb.subgraphs[0], names)
    ops = fb.subgraphs[0].operators
    # only b -> its 1x1 conv; a (relu6, two readers) and the ADD's output (not a constant add) start none
    assert len(chains) == 1
    assert names[ops[chains[0].producer].opcodeIndex] == "CONV_2D"
    prod_out = int(ops[chains[0].producer].outputs[0])
    assert all(prod_out != int(o) for o in ops[0].outputs)


def test_ptq_auto_equalizes_a_savedmodel_source(dwnet, tmp_path):
    """The hard sample as a SavedModel (no Keras graph): equalization now comes from the flatbuffer step."""
    from edgeq import ConvertOptions, Mode, convert
    from edgeq.nativeio import quiet_native_output

    saved = tmp_path / "dwnet_saved"
    with quiet_native_output():
        keras.saving.load_model(str(dwnet.keras), compile=False).export(str(saved), verbose=False)
    rep = convert(saved, ConvertOptions(mode=Mode.INT8, calib=dwnet.calib, calib_samples=100),
                  out=tmp_path / "m.tflite").to_dict()
    step = next(s for s in rep["ptq"]["steps"] if s["name"] == "equalize_calibrated")
    assert step["applied"] and step["gain_db"] > 10  # two-decade depthwise channel spreads, measured ~22 dB
    assert rep["fully_integer"]
