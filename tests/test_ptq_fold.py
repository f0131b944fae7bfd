"""Affine folding in the calibrated flatbuffer: a BatchNorm after ReLU (``MUL``/``ADD`` constants the converter
cannot fold) goes into the conv weights exactly, only when that is exact, and ``--ptq auto`` keeps it on the
PyTorch sample because it measurably helps there."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import calibrate_keras

import keras  # a hard dependency: broken, it must fail the tests, not skip them

ROOT = Path(__file__).resolve().parents[1]
TORCH = ROOT / "sample_models" / "fashion_torch"


def _conv_relu_bn(gamma: np.ndarray, dense_bn: bool = False):
    """Conv(relu) -> BN -> depthwise(relu) -> BN -> pool -> Dense (-> BN): BNs after a ReLU cannot be fused."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 2))
    y = keras.layers.Conv2D(len(gamma), 3, padding="same", activation="relu")(inp)
    bn1 = keras.layers.BatchNormalization()
    y = bn1(y)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(y)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    y = keras.layers.Dense(5)(y)
    if dense_bn:
        y = keras.layers.BatchNormalization()(y)
    model = keras.Model(inp, y)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            g = gamma if layer is bn1 else rng.uniform(0.5, 3.0, n)
            layer.set_weights([g.astype(np.float32), rng.normal(0, 0.5, n).astype(np.float32),
                               rng.uniform(0, 0.5, n).astype(np.float32), rng.uniform(0.5, 2, n).astype(np.float32)])
    return model


def _run_float(content: bytes, x: np.ndarray) -> np.ndarray:
    from edgeq.runtime import TFLiteRunner

    return TFLiteRunner(content=content).run(_feed(content, x))[0]


def _feed(content: bytes, x: np.ndarray) -> dict:
    from edgeq.runtime import TFLiteRunner

    return {next(iter(TFLiteRunner(content=content).input_names)): x}


def _ops(content: bytes) -> list[str]:
    from edgeq.modelinfo import open_interpreter

    return [op["op_name"] for op in open_interpreter(content=content)._get_ops_details()]  # noqa: SLF001


@pytest.fixture(scope="module")
def spread():
    """BN multipliers from 0.5 to 300 after a ReLU: one per-tensor int8 scale cannot hold them all."""
    x = np.random.default_rng(2).uniform(0, 1, (48, 12, 12, 2)).astype(np.float32)
    gamma = np.geomspace(0.5, 300, 8)
    model = _conv_relu_bn(gamma, dense_bn=True)
    cal, _ = calibrate_keras(model, x)
    return model, cal, x


def test_folding_keeps_the_float_function_and_removes_the_mul_ops(spread):
    from edgeq.quantize.prepare.fold_affine import fold_affine

    model, cal, x = spread
    folded, n = fold_affine(cal.content)
    before, after = _ops(cal.content), _ops(folded)
    # conv(relu) -> BN and depthwise(relu) -> BN; the converter folds the dense layer's linear BN itself
    assert n == 2 and before.count("MUL") == 2 and after.count("MUL") == 0
    ref = model.predict(x, verbose=0)
    got = _run_float(folded, x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_folded_int8_follows_the_float_model_more_closely(spread):
    from edgeq import metrics
    from edgeq.runtime import TFLiteRunner
    from edgeq.quantize.prepare.fold_affine import fold_affine

    model, cal, x = spread
    ref = model.predict(x, verbose=0).astype(np.float64)
    plain = TFLiteRunner(content=cal.quantize()).run(_feed(cal.content, x))[0]
    folded = type(cal)(fold_affine(cal.content)[0], cal.per_channel, cal.io, cal.source)
    got = TFLiteRunner(content=folded.quantize()).run(_feed(cal.content, x))[0]
    assert metrics.sqnr_db(ref, got.astype(np.float64)) > metrics.sqnr_db(ref, plain.astype(np.float64)) + 3


def test_negative_multiplier_after_relu_is_not_folded():
    """relu(z) * s != relu(z * s) for s < 0: that MUL (and the ADD behind it) must stay."""
    from edgeq.quantize.prepare.fold_affine import fold_affine

    x = np.random.default_rng(3).uniform(0, 1, (16, 12, 12, 2)).astype(np.float32)
    gamma = np.array([1.0, -2.0, 0.5, 3.0])
    model = _conv_relu_bn(gamma)
    cal, _ = calibrate_keras(model, x)
    folded, n = fold_affine(cal.content)
    ops = _ops(folded)
    conv_next = ops[ops.index("CONV_2D") + 1]
    assert conv_next == "MUL"  # the first BN's multiply stays where it was
    np.testing.assert_allclose(_run_float(folded, x), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_ptq_auto_keeps_folding_on_the_pytorch_sample(tmp_path):
    from edgeq import ConvertOptions, Mode, convert

    rep = convert(TORCH / "model.onnx", ConvertOptions(mode=Mode.INT8, calib=TORCH / "calib.npz", calib_samples=100),
                  out=tmp_path / "m.tflite")
    plan = rep.to_dict()["ptq"]
    step = next(s for s in plan["steps"] if s["name"] == "fold_affine")
    assert step["applied"] and step["gain_db"] > 3  # per-tensor int8 BN multipliers were the big error
    assert plan["final"]["sqnr_db"] >= step["score"]["sqnr_db"]
    assert "MUL" not in rep.to_dict()["op_counts"] and rep.to_dict()["fully_integer"]
