"""End-to-end range search (``--ptq learned``): a range is narrowed only when the whole INT8 model's output
follows the float model more closely, and a step that only fits is judged on samples it did not fit."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import calibrate_keras

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _tailed_model():
    """Conv 1x1 whose channel 0 reads input channel 3 with weight 10 (a rare, huge activation that sets the
    tensor's one int8 scale) and feeds the output with weight 0.01: clipping it costs the output little
    and sharpens the other seven channels, which carry the output."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 4))
    conv = keras.layers.Conv2D(8, 1, activation="relu")
    y = conv(inp)
    k = np.random.default_rng(0).normal(0, 0.3, (1, 1, 4, 8)).astype(np.float32)
    k[0, 0, :, 0], k[0, 0, 3, 0] = 0.0, 10.0
    conv.set_weights([k, np.zeros(8, np.float32)])
    dense = keras.layers.Dense(4)
    out = dense(keras.layers.GlobalAveragePooling2D()(y))
    w = np.random.default_rng(1).normal(0, 0.5, (8, 4)).astype(np.float32)
    w[0] = 0.01
    dense.set_weights([w, np.zeros(4, np.float32)])
    return keras.Model(inp, out)


@pytest.fixture(scope="module")
def tailed():
    x = np.random.default_rng(2).uniform(0, 1, (48, 8, 8, 4)).astype(np.float32)
    x[..., 3] *= 0.05
    x[::6, 0, 0, 3] = 1.0  # a spike at one pixel of every 6th sample
    return calibrate_keras(_tailed_model(), x)


def test_search_narrows_the_tail_and_raises_the_output_sqnr(tailed):
    from edgeq.quantize.prepare.range_search import recorded_ranges, search

    cal, feeds = tailed
    edited, changed, before, after = search(cal, feeds)
    assert changed and after > before + 0.05, (changed, before, after)
    old, new = recorded_ranges(cal.content), recorded_ranges(edited.content)
    for name in changed:
        assert new[name][1] < old[name][1]  # narrowed, never widened
    assert all(new[n] == old[n] for n in old if n not in changed)


def test_a_model_with_nothing_to_gain_is_left_alone():
    from edgeq.quantize.prepare.range_search import RangeSearchStep

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(3)(inp))
    x = np.random.default_rng(0).uniform(-1, 1, (32, 4)).astype(np.float32)
    cal, feeds = calibrate_keras(model, x)
    assert RangeSearchStep().candidates(cal, feeds) == []


def test_learned_runs_range_search_before_learned_rounding_and_auto_does_not():
    from edgeq.quantize.prepare.order import steps

    learned = [s.name for s in steps(per_channel=True, learned=True)]
    assert learned[-2:] == ["range_search", "sequential_rounding"]
    assert "range_search" not in [s.name for s in steps(per_channel=True, learned=False)]
