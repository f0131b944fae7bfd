"""equalize_activations: equalize_calibrated's migration on Keras layers (what QAT starts from)."""
from __future__ import annotations

import numpy as np

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _model():
    from keras import layers

    keras.utils.set_random_seed(2)
    inp = keras.Input((10, 10, 3))
    x = layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    x = layers.Conv2D(5, 1, name="c2")(x)  # c1 -> c2: a pair
    x = layers.SeparableConv2D(7, 3, depth_multiplier=2, padding="same", name="sep")(x)
    x = layers.ReLU()(x)
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(4, name="fc")(x)
    m = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    # channel ranges decades apart, as a BatchNorm folded after a ReLU leaves them
    w = m.get_layer("c1").get_weights()
    m.get_layer("c1").set_weights([w[0] * rng.uniform(0.01, 10, 6), w[1]])
    dk, pk, b = m.get_layer("sep").get_weights()
    m.get_layer("sep").set_weights([dk * rng.uniform(0.01, 10, (5, 2)), pk, b])
    return m


def _dw_peaks(m, x):
    layer = m.get_layer("sep")
    probe = keras.Model(m.inputs, layer.input)
    mid = keras.ops.depthwise_conv(probe.predict(x, verbose=0), layer.depthwise_kernel, strides=1, padding="same")
    return np.abs(np.asarray(mid)).reshape(-1, 10).max(0)


def test_float_function_kept_and_alpha_one_evens_the_channel_peaks():
    from edgeq.quantize.prepare.equalize_activations import equalize_activations

    x = np.random.default_rng(1).uniform(-1, 1, (32, 10, 10, 3)).astype(np.float32)
    m = _model()
    ref = m.predict(x, verbose=0)
    before = _dw_peaks(m, x)
    c1_before = np.abs(keras.Model(m.inputs, m.get_layer("c1").output).predict(x, verbose=0)).reshape(-1, 6).max(0)
    m, n = equalize_activations(m, x, alpha=1.0)
    assert n == 2  # the separable's own depthwise -> pointwise, and c1 -> c2
    np.testing.assert_allclose(m.predict(x, verbose=0), ref, rtol=1e-4, atol=1e-5)
    after = _dw_peaks(m, x)
    c1_after = np.abs(keras.Model(m.inputs, m.get_layer("c1").output).predict(x, verbose=0)).reshape(-1, 6).max(0)
    assert before.max() / before.min() > 50  # the spread the scaling must remove
    np.testing.assert_allclose(after, after.mean(), rtol=1e-4)  # s_c = a_c (alpha 1): one peak for all
    np.testing.assert_allclose(c1_after, c1_after.mean(), rtol=1e-4)
    assert c1_before.max() / c1_before.min() > 5


def test_qat_start_replays_the_flatbuffer_equalization_with_ptqs_alpha():
    from edgeq.qat.start import prepared_start

    x = np.random.default_rng(1).uniform(-1, 1, (32, 10, 10, 3)).astype(np.float32)
    m = _model()
    ref = m.predict(x, verbose=0)
    steps = [{"name": "equalize", "applied": False, "label": ""},
             {"name": "equalize_calibrated", "applied": True, "label": "0.5"}]
    start, done = prepared_start(m, steps, x)
    assert done[-1] == "equalize_calibrated (2 chains, alpha 0.5, on the Keras layers)"
    np.testing.assert_allclose(start.predict(x, verbose=0), ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(start.get_layer("sep").get_weights()[0], m.get_layer("sep").get_weights()[0])
    # skipped by PTQ: not replayed
    assert prepared_start(m, [{**steps[1], "applied": False}], x) == (m, [])
