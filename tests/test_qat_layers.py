"""The QAT rewrite on the layer kinds real Keras models use (issue 17): a nested base with SeparableConv2D,
PReLU, LeakyReLU, squeeze-excite Multiply, swish/hard_swish/sigmoid/tanh, UpSampling2D, Concatenate and two
output heads becomes a real all-integer .tflite that LiteRT runs as the fake-quant model computed it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.data import Dataset

import keras  # a hard dependency: missing is a broken install, not a skip
from keras import layers


def face_model():
    """16x16 grey -> (4-class softmax, 2-value box regression), the body nested as a pretrained base."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    i = keras.Input((16, 16, 1))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(i)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="stem_prelu")(x)
    r = layers.Conv2D(12, 1, strides=2, use_bias=False, name="res")(x)
    r = layers.BatchNormalization(name="res_bn")(r)
    y = layers.SeparableConv2D(12, 3, padding="same", use_bias=False, name="sep1")(x)
    y = layers.BatchNormalization(name="sep1_bn")(y)
    y = layers.Activation("hard_swish", name="sep1_hswish")(y)
    y = layers.SeparableConv2D(12, 3, padding="same", activation="relu", name="sep2")(y)
    y = layers.MaxPooling2D(3, 2, padding="same", name="pool")(y)
    x = layers.Add(name="res_add")([y, r])
    s = layers.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    s = layers.Conv2D(4, 1, activation="swish", name="se_reduce")(s)
    s = layers.Conv2D(12, 1, activation="sigmoid", name="se_expand")(s)
    x = layers.Multiply(name="se_mul")([x, s])
    x = layers.LeakyReLU(0.1, name="leaky")(x)
    u = layers.UpSampling2D(name="up")(layers.Conv2D(4, 1, activation="tanh", name="squeeze")(x))
    u = layers.MaxPooling2D(name="down")(u)
    x = layers.Concatenate(name="concat")([x, u])
    base = keras.Model(i, x, name="pretrained_base")
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                               rng.uniform(0.5, 2.0, c)])
    inp = keras.Input((16, 16, 1), name="image")
    f = layers.GlobalAveragePooling2D(name="gap")(base(inp, training=False))
    cls = layers.Dense(4, activation="softmax", name="cls")(f)
    box = layers.Dense(2, name="box")(f)
    return keras.Model(inp, [cls, box], name="face")


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 1, (96, 16, 16, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def calibrated(images):
    from edgeq.progress import Silent
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, calibrate

    model = face_model()
    qat = rewrite(model)
    calibrate(qat, Dataset({"image": images}, None, Path("x.npz")), TrainConfig(batch_size=32), Silent())
    return model, qat


def test_nested_model_is_flattened_and_every_layer_kind_is_simulated(calibrated, images):
    model, qat = calibrated
    assert qat.flat.nested == 1 and qat.output_activations == ["softmax", None]
    assert {"stem+stem_bn", "sep1+sep1_bn", "sep2", "res+res_bn", "se_reduce", "se_expand"} <= set(qat.fused)
    ref, fq = model.predict(images, verbose=0), qat.model.predict(images, verbose=0)
    # fake quantization perturbs, the function stays (the random model's classes are near ties: no argmax check)
    assert np.abs(ref[0] - fq[0]).max() < 0.01
    assert np.abs(ref[1] - fq[1]).max() < 0.03 * np.abs(ref[1]).max()


def test_export_is_all_integer_and_litert_runs_what_training_simulated(calibrated, images):
    from edgeq.modes import IOType
    from edgeq.qat.export import inspect_export, to_tflite
    from edgeq.runtime import TFLiteRunner

    _, qat = calibrated
    content = to_tflite(qat.model, IOType.INT8, Path("face.keras"))
    info = inspect_export(content, IOType.INT8, Path("face.keras"))
    assert info.fully_integer and info.all_weights_per_channel and not info.float_ops
    assert all(t.dtype == "int8" for t in info.inputs + info.outputs) and len(info.outputs) == 2
    ops = set(info.op_counts)
    assert {"DEPTHWISE_CONV_2D", "CONV_2D", "PRELU", "HARD_SWISH", "LOGISTIC", "TANH", "LEAKY_RELU", "MUL",
            "CONCATENATION", "ADD", "FULLY_CONNECTED"} <= ops, ops
    assert {"TILE", "RESIZE_NEAREST_NEIGHBOR"} & ops  # Keras 3's UpSampling2D lowers to a repeat (TILE), int8 too
    assert info.op_counts["DEPTHWISE_CONV_2D"] == 2  # each SeparableConv2D lowered to depthwise + pointwise
    outs = TFLiteRunner(content=content).run({"image": images})
    fq = qat.model.predict(images, verbose=0)
    # match heads by shape (the converter may order outputs differently)
    by_shape = {o.shape[-1]: o for o in outs}
    assert np.abs(by_shape[4] - fq[0]).max() <= 4 / 256  # a few int8 output steps (1/256 for softmax)
    step = (qat.model.get_layer("box_q").out_quant.max - qat.model.get_layer("box_q").out_quant.min) / 255
    assert np.abs(by_shape[2] - fq[1]).max() <= 3 * float(step)


def test_a_layer_without_simulation_is_named_even_inside_a_nested_base():
    from edgeq.errors import EdgeqError
    from edgeq.qat.rewrite import rewrite

    i = keras.Input((8, 8, 1))
    base = keras.Model(i, layers.LayerNormalization(name="deep_ln")(layers.Conv2D(4, 3)(i)), name="base")
    model = keras.Sequential([keras.Input((8, 8, 1)), base, layers.Flatten(), layers.Dense(2)])
    with pytest.raises(EdgeqError) as e:
        rewrite(model)
    msg = str(e.value)
    assert "'deep_ln' (LayerNormalization)" in msg and "edgeq convert" in msg and "\n" not in msg


def test_unlabelled_images_train_both_heads_by_distillation_and_early_stopping_keeps_the_best(images):
    """No labels: the float model's two heads are the targets (cross-entropy on the softmax head, MSE on the
    box head). A learning rate far too high wrecks the model; early stopping keeps the calibrated start."""
    from edgeq.progress import Silent
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, _losses, agreement_with_float, calibrate, seed_everything, train

    model = face_model()
    train_ds = Dataset({"image": images[:64]}, None, Path("unlabelled.npz"))
    val_ds = Dataset({"image": images[64:]}, None, Path("val.npz"))
    ref = [np.asarray(o) for o in model.predict(images[64:], verbose=0)]

    def run(lr, epochs):
        seed_everything(0)
        qat = rewrite(model)
        cfg = TrainConfig(epochs=epochs, batch_size=16, learning_rate=lr, patience=1)
        calibrate(qat, train_ds, cfg, Silent())
        start = agreement_with_float(qat, val_ds, ref)
        hist = train(qat, train_ds, val_ds, cfg, val_reference=ref)
        return qat, start, hist

    qat, start, hist = run(1e-3, 2)
    assert _losses(qat, ref, labelled=False)[0] == ["ce", "mse"]
    assert all(h.accuracy is None and h.val_agreement is not None and h.loss > 0 for h in hist)
    end = agreement_with_float(qat, val_ds, ref)
    assert end.sqnr_db >= start.sqnr_db  # never worse than where it started: the best epoch is kept
    assert not all(np.array_equal(a, b) for a, b in zip(qat.float_model.get_weights(), model.get_weights())) \
        or not any(h.best for h in hist)

    qat, start, hist = run(3.0, 5)  # diverges: stops after `patience` bad epochs, restores the start
    assert len(hist) == 1 and not any(h.best for h in hist)  # patience 1
    assert agreement_with_float(qat, val_ds, ref).key(False) == start.key(False)


def test_start_from_ptq_folded_bn_fuses_the_relu_as_before(images):
    """PTQ's BN folding leaves an Identity between conv and ReLU (also after SeparableConv2D): the simulation must
    still fuse conv+ReLU as the converter does, with no extra range before the ReLU."""
    from edgeq.progress import Silent
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, calibrate
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm

    keras.utils.set_random_seed(0)
    i = keras.Input((16, 16, 1), name="image")
    x = layers.Conv2D(8, 3, use_bias=False, name="c")(i)
    x = layers.BatchNormalization(name="c_bn")(x)
    x = layers.Activation("relu", name="c_relu")(x)
    x = layers.SeparableConv2D(8, 3, use_bias=False, name="s")(x)
    x = layers.BatchNormalization(name="s_bn")(x)
    x = layers.ReLU(name="s_relu")(x)
    model = keras.Model(i, layers.Dense(4, activation="softmax", name="head")(layers.GlobalAveragePooling2D()(x)))
    folded, n_bn = fold_batchnorm(model)
    assert n_bn == 2
    a, b = rewrite(model), rewrite(folded)
    assert {"c+c_bn+c_relu", "s+s_bn+s_relu"} <= set(a.fused) and {"c+c_relu", "s+s_relu"} <= set(b.fused)
    assert len(a.quantizers()) == len(b.quantizers())
    ds = Dataset({"image": images}, None, Path("x.npz"))
    for q in (a, b):
        calibrate(q, ds, TrainConfig(batch_size=32), Silent())
    fq = b.model.predict(images, verbose=0)
    np.testing.assert_allclose(fq, a.model.predict(images, verbose=0), atol=3 / 256)
    from edgeq.modes import IOType
    from edgeq.qat.export import inspect_export, to_tflite
    from edgeq.runtime import TFLiteRunner

    content = to_tflite(b.model, IOType.INT8, Path("folded.keras"))
    info = inspect_export(content, IOType.INT8, Path("folded.keras"))
    assert info.fully_integer and "RELU" not in info.op_counts  # the ReLUs fused into the convs, as simulated
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= set(info.op_counts) and "MUL" not in info.op_counts
    tfl = TFLiteRunner(content=content).run({"image": images})[0]
    assert np.abs(tfl - fq).max() <= 4 / 256
