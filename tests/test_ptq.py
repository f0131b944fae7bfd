"""Post-training INT8 preparation (issue 8): each step keeps the float function, and ``--ptq auto`` beats
plain calibration on the hard sample while the model stays all-integer and per-channel."""
from __future__ import annotations

import json

import numpy as np
import pytest

import keras  # a hard dependency: broken, it must fail the tests, not skip them

from tests.claims import margin_points, results


def _calib_x(sample, n=64):
    return np.load(sample.calib)["x"][:n]


@pytest.fixture(scope="module")
def dw_model(dwnet):
    return keras.saving.load_model(str(dwnet.keras), compile=False)


def _dw_ranges(model):
    """Per-layer ratio of largest to smallest per-channel range of the folded depthwise kernels."""
    out = []
    for layer in model.layers:
        if layer.__class__.__name__ == "DepthwiseConv2D":
            r = np.abs(np.asarray(layer.kernel)).reshape(-1, layer.kernel.shape[2]).max(0)
            out.append(r.max() / max(r.min(), 1e-12))
    return out


def test_fold_equalize_absorb_keep_the_float_function_and_balance_ranges(dw_model, dwnet):
    from edgeq.quantize.prepare.bias_absorb import absorb_biases
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.equalize import equalize

    x = _calib_x(dwnet)
    ref = dw_model.predict(x, verbose=0)
    folded, n_bn = fold_batchnorm(dw_model)
    assert n_bn == 13 and not any(type(lay).__name__ == "BatchNormalization" for lay in folded.layers)
    before = _dw_ranges(folded)
    eq, pairs = equalize(folded, x)
    after = _dw_ranges(eq)
    eq, _ = absorb_biases(eq, x)
    np.testing.assert_allclose(eq.predict(x, verbose=0), ref, atol=1e-4)
    assert pairs >= 12
    assert max(before) > 100 and max(after) < max(before) / 10  # orders of magnitude -> balanced


def _bn_with_stats(layer, rng, c):
    """Non-trivial BN statistics, so that a wrong fold shows."""
    layer.set_weights([rng.uniform(0.5, 2, c), rng.normal(0, 0.5, c), rng.normal(0, 0.5, c), rng.uniform(0.2, 3, c)])


def test_batchnorm_after_separable_conv_folds_into_the_pointwise_kernel():
    """mini-Xception's pattern (fer's emotion CNN: 8 of its 14 BNs): SeparableConv2D -> BN [-> ReLU]."""
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm

    rng = np.random.default_rng(0)
    inp = keras.Input((8, 8, 3))
    a = keras.layers.SeparableConv2D(6, 3, padding="same", use_bias=False, name="sep_a")(inp)
    a = keras.layers.BatchNormalization(name="bn_a")(a)
    a = keras.layers.ReLU(name="relu_a")(a)
    b = keras.layers.SeparableConv2D(6, 3, padding="same", depth_multiplier=2, name="sep_b")(a)  # with a bias
    b = keras.layers.BatchNormalization(name="bn_b")(b)
    res = keras.layers.Conv2D(6, 1, use_bias=False, name="res")(inp)
    res = keras.layers.BatchNormalization(name="bn_res")(res)
    model = keras.Model(inp, keras.layers.Add()([b, res]))
    for name, c in (("bn_a", 6), ("bn_b", 6), ("bn_res", 6)):
        _bn_with_stats(model.get_layer(name), rng, c)
    sep_b = model.get_layer("sep_b")
    sep_b.set_weights([w.numpy() if hasattr(w, "numpy") else w for w in sep_b.get_weights()[:2]]
                      + [rng.normal(0, 0.3, 6).astype(np.float32)])
    x = rng.normal(size=(16, 8, 8, 3)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    folded, n_bn = fold_batchnorm(model)
    assert n_bn == 3
    assert not any(type(lay).__name__ == "BatchNormalization" for lay in folded.layers)
    assert folded.get_layer("sep_a").use_bias
    np.testing.assert_array_equal(np.asarray(folded.get_layer("sep_b").depthwise_kernel),
                                  np.asarray(sep_b.depthwise_kernel))  # only the pointwise part changes
    np.testing.assert_allclose(folded.predict(x, verbose=0), ref, atol=1e-4)


def test_equalization_keeps_relu6_exact_on_calibration_data():
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.equalize import equalize

    rng = np.random.default_rng(0)
    inp = keras.Input((6, 6, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU(6.0)(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(y)
    model = keras.Model(inp, y)
    k = rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * np.logspace(-2, 1, 8, dtype=np.float32)
    model.layers[1].set_weights([k])  # channel ranges over 3 decades; the large ones hit the clip
    x = rng.uniform(0, 1, size=(32, 6, 6, 3)).astype(np.float32)
    ref = model.predict(x, verbose=0)
    folded, _ = fold_batchnorm(model)
    eq, n = equalize(folded, x)
    assert n == 1
    np.testing.assert_allclose(eq.predict(x, verbose=0), ref, atol=1e-4)


def test_bias_correction_removes_the_mean_shift_of_weight_rounding():
    from edgeq.quantize.prepare.bias_correction import correct_biases, simulate_int8_weights

    rng = np.random.default_rng(1)
    inp = keras.Input((16,))
    model = keras.Model(inp, keras.layers.Dense(4)(inp))
    w = rng.normal(size=(16, 4)).astype(np.float32)
    w[0] *= 50  # one big weight per column: coarse steps for the rest
    model.layers[1].set_weights([w, np.zeros(4, np.float32)])
    x = (rng.normal(size=(256, 16)) + 3).astype(np.float32)  # non-zero input mean: rounding shifts the output
    wq = simulate_int8_weights("Dense", w, per_channel=True)
    assert np.all(np.abs(wq - w) <= np.abs(w).max(0) / 254 + 1e-6)
    shift_before = np.abs((x @ wq - x @ w).mean(0))
    correct_biases(model, x, per_channel=True)
    b = model.layers[1].get_weights()[1]
    shift_after = np.abs((x @ wq + b - x @ w).mean(0))
    assert shift_before.max() > 1e-3 and shift_after.max() < shift_before.max() / 100


def test_clipping_methods_cut_long_tails():
    from edgeq.quantize.prepare.ranges import RangeMethod, choose_range

    v = np.abs(np.random.default_rng(2).laplace(size=20000)).astype(np.float32)  # long-tailed, like ReLU outputs
    v[0] = 200.0  # one rare outlier
    assert choose_range(v, RangeMethod.MINMAX) == (0.0, 200.0)
    assert choose_range(v, RangeMethod.PERCENTILE)[1] < 20.0
    v = v[1:]
    lo, hi = choose_range(v, RangeMethod.MSE)

    def err(top):
        step = top / 255
        return np.mean((np.clip(np.round(v / step), 0, 255) * step - v) ** 2)

    assert lo == 0.0 and hi < v.max() and err(hi) < err(v.max())  # near 9.9 b for 8 bits (Banner et al.)


@pytest.fixture(scope="module")
def converted(dwnet, tmp_path_factory):
    """The hard sample converted to full INT8 with --ptq auto and --ptq plain (once for the module)."""
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode, PtqChoice

    out = tmp_path_factory.mktemp("ptq")
    return {c: convert(dwnet.keras, ConvertOptions(mode=Mode.INT8, calib=dwnet.calib, ptq=c),
                       out=out / f"{c.value}.tflite", eval_data=dwnet.eval)
            for c in (PtqChoice.AUTO, PtqChoice.PLAIN)}  # learned: tests/test_ptq_sequential_rounding.py


def test_auto_beats_plain_and_stays_integer_per_channel(converted):
    from edgeq.modes import PtqChoice

    auto, plain = converted[PtqChoice.AUTO], converted[PtqChoice.PLAIN]
    for r in (auto, plain):
        assert r.model.fully_integer and not r.model.float_ops
        weights = [w for w in r.model.weights if w.channels > 0]
        assert weights and all(w.per_channel for w in weights if w.op != "FULLY_CONNECTED")
    a, p = auto.accuracy, plain.accuracy
    assert a.vs_float.agreement > p.vs_float.agreement + 0.05  # plain loses several points here
    # README/docs/ptq.md claim (bench_ptq, same options, the 2,000 eval images PTQ never sees): plain loses
    # 5.30 points, auto ends at -0.05. Bound: the claim plus the noise of a difference on 2,000 images
    # (claims.margin_points: ~0.40 pt for auto at 99.2% agreement, ~1.54 pt for plain at 88.2%).
    rows = {r["ptq"]: r for r in results("bench_ptq")["rows"]
            if r["model"] == "fashion_dwnet" and r["weights"] == "per-channel"}
    assert a.samples == 2000
    assert a.drop_points <= rows["auto"]["drop_points"] + margin_points(a.vs_float.agreement, a.samples)
    assert p.drop_points >= rows["plain"]["drop_points"] - margin_points(p.vs_float.agreement, p.samples)
    plan = auto.extra["ptq"]
    assert "equalize" in plan["applied"]
    assert plan["final"]["sqnr_db"] > plan["baseline"]["sqnr_db"]
    assert plain.extra["ptq"]["choice"] == "plain"


def test_report_says_what_ptq_applied(converted):
    from edgeq.modes import PtqChoice

    auto = converted[PtqChoice.AUTO]
    text = auto.render()
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("ptq"))
    assert "equalize kept" in line and "dB" in line
    steps = json.loads(auto.to_json())["ptq"]["steps"]
    assert steps[0]["name"] == "equalize"
    labelled = [s for s in steps if s["applied"] and s["label"]]  # e.g. ranges: which clipping method won
    assert labelled and all(f"{s['name']} kept ({s['label']}) " in line for s in labelled)


def test_cli_rejects_unknown_ptq_choice(cli, dwnet):
    res = cli("convert", dwnet.keras, "--mode", "int8", "--calib", dwnet.calib, "--ptq", "magic")
    assert res.code == 2 and "magic" in res.err


def test_keep_rule_compares_agreement_sample_by_sample():
    from edgeq.quantize.prepare.ptq import Score, _judge

    def score(db, hits):
        return Score(db, tuple(hits))

    best = score(10.0, [True] * 11 + [False])
    # one sample flipped on 12 (8 points of agreement) is within the sign test's noise: +2.6 dB is kept
    assert _judge(score(12.6, [True] * 10 + [False, False]), best) == (2.6, True)
    # two lost and none won is not noise
    assert _judge(score(12.6, [True] * 9 + [False] * 3), best)[1] is False
    # three lost, one won: net 2 <= sqrt(4)
    assert _judge(score(12.6, [False] * 3 + [True] * 9), best)[1] is True
    # no SQNR gain, no keep, however the samples move
    assert _judge(score(10.05, [True] * 12), best)[1] is False
    # a plan's JSON has the scores without the per-sample hits
    from edgeq.modes import PtqChoice
    from edgeq.quantize.prepare.ptq import PtqPlan, PtqStep

    plan = PtqPlan(PtqChoice.AUTO, baseline=best, final=best, steps=[PtqStep("x", "d", True, best, 0.2)])
    doc = json.loads(json.dumps(plan.to_dict()))
    assert doc["baseline"] == {"sqnr_db": 10.0, "agreement": round(11 / 12, 4)} and "hits" not in doc["steps"][0]["score"]
