"""edgeq.qat library: the rewrite simulates what TFLite runs, exports are really integer, runs repeat."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq.data import Dataset

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _randomize_bn(model, rng) -> None:
    """Non-trivial BatchNorm statistics, so that folding them matters."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.3, c),
                               rng.uniform(0.5, 2.0, c)])


def tiny_functional():
    """Every layer kind the sample models use: Conv/BN/ReLU6, depthwise, residual Add, pooling, Dense."""
    from keras import layers

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 1), name="image")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(name="dw_bn")(y)
    y = layers.ReLU(6.0, name="dw_relu6")(y)
    y = layers.Conv2D(8, 1, use_bias=False, name="project")(y)
    y = layers.BatchNormalization(name="project_bn")(y)
    x = layers.Add(name="add")([x, y])
    x = layers.MaxPooling2D(name="pool")(x)
    x = layers.Conv2D(16, 3, strides=2, activation="relu", name="conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(4, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out)
    _randomize_bn(model, rng)
    return model


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return rng.uniform(0, 1, (96, 12, 12, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def calibrated(images):
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, calibrate
    from edgeq.progress import Silent

    model = tiny_functional()
    qat = rewrite(model)
    calibrate(qat, Dataset({"image": images}, None, Path("x.npz")), TrainConfig(batch_size=32), Silent())
    return model, qat


def test_rewrite_fuses_like_the_converter_and_keeps_the_input_model(calibrated, images):
    model, qat = calibrated
    assert {"stem+stem_bn+stem_relu6", "dw+dw_bn+dw_relu6", "project+project_bn", "add", "conv",
            "probs"} <= set(qat.fused)
    assert qat.output_activation == "softmax"
    assert qat.float_model is not model  # the caller's model is cloned, never trained in place
    ref = model.predict(images, verbose=0)
    fq = qat.model.predict(images, verbose=0)
    # Fake quantization perturbs, but the simulated model still computes the same function.
    assert np.mean(ref.argmax(-1) == fq.argmax(-1)) >= 0.9
    assert np.abs(ref - fq).max() < 0.1


def test_export_is_full_integer_per_channel_and_runs_what_training_simulated(calibrated, images):
    from edgeq.modes import IOType
    from edgeq.qat.export import inspect_export, to_tflite
    from edgeq.runtime import TFLiteRunner

    _, qat = calibrated
    content = to_tflite(qat.model, IOType.INT8, Path("tiny.keras"))
    info = inspect_export(content, IOType.INT8, Path("tiny.keras"))
    assert info.fully_integer and info.all_weights_per_channel
    assert info.inputs[0].dtype == "int8" and info.outputs[0].dtype == "int8"
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"} <= set(info.op_counts)
    assert "MUL" not in info.op_counts  # BatchNorm folded into the convolutions, not left as MUL/ADD
    tfl = TFLiteRunner(content=content).run({"image": images})[0]
    fq = qat.model.predict(images, verbose=0)
    # The integer model reproduces the fake-quant model (one output step is 1/256 for softmax).
    assert np.mean(tfl.argmax(-1) == fq.argmax(-1)) >= 0.95
    assert np.abs(tfl - fq).max() <= 4 / 256


def test_sequential_model_with_logits():
    from keras import layers

    from edgeq.modes import IOType
    from edgeq.qat.export import inspect_export, to_tflite
    from edgeq.qat.rewrite import rewrite

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(4, 3, activation="relu6"),
                              layers.Flatten(), layers.Dense(3)])
    qat = rewrite(model)
    assert qat.output_activation is None  # logits: the loss will use from_logits=True
    qat.model(np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32))
    for q in qat.quantizers():
        q.max.assign(6.0)
    info = inspect_export(to_tflite(qat.model, IOType.FLOAT32, Path("seq.keras")), IOType.FLOAT32, Path("s"))
    assert not info.float_ops and info.all_weights_per_channel


@pytest.mark.parametrize("bad, needle", [
    (lambda x: keras.layers.Activation("gelu", name="act_gelu")(x), "act_gelu"),
    (lambda x: keras.layers.LayerNormalization(name="ln")(x), "ln"),
    (lambda x: keras.layers.BatchNormalization(name="lonely_bn")(keras.layers.MaxPooling2D()(x)), "lonely_bn"),
])
def test_unsupported_layer_is_named_with_what_to_do(bad, needle):
    from edgeq.errors import EdgeqError
    from edgeq.qat.rewrite import rewrite

    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3)(inp)
    out = keras.layers.Dense(2)(keras.layers.Flatten()(bad(x)))
    with pytest.raises(EdgeqError) as e:
        rewrite(keras.Model(inp, out))
    msg = str(e.value)
    assert f"'{needle}'" in msg and "edgeq convert" in msg and "\n" not in msg


def test_same_seed_same_weights_other_seed_other_weights(images):
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, calibrate, seed_everything, train
    from edgeq.progress import Silent

    labels = (images.reshape(len(images), -1).mean(1) * 40).astype(np.int64) % 4
    ds = Dataset({"image": images}, labels, Path("train.npz"))
    model = tiny_functional()

    def run(seed):
        seed_everything(seed)
        qat = rewrite(model)
        cfg = TrainConfig(epochs=1, batch_size=32, seed=seed, learning_rate=1e-2)
        calibrate(qat, ds, cfg, Silent())
        hist = train(qat, ds, None, cfg)
        assert len(hist) == 1 and np.isfinite(hist[0].loss)
        return [w.copy() for w in qat.float_model.get_weights()]

    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not all(np.array_equal(x, y) for x, y in zip(a, model.get_weights()))  # it did train


def test_distillation_loss_is_kl_and_temperature_trains():
    """Unlabelled: the reported loss is KL from the float model (0 when they match, not the float model's entropy);
    a temperature softens both sides and still trains."""
    from edgeq.progress import Silent
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, calibrate, seed_everything, train

    x = np.random.default_rng(2).uniform(0, 1, (64, 12, 12, 1)).astype(np.float32)
    ds = Dataset({"image": x}, None, Path("train.npz"))
    model = tiny_functional()
    p = model.predict(x, verbose=0)
    entropy = float(np.mean(-np.sum(p * np.log(np.clip(p, 1e-12, 1)), -1)))
    for temp in (1.0, 3.0):
        seed_everything(0)
        qat = rewrite(model)
        cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, temperature=temp)
        calibrate(qat, ds, cfg, Silent())
        before = [w.copy() for w in qat.float_model.get_weights()]
        (h,) = train(qat, ds, None, cfg)
        assert -1e-4 < h.loss < 0.5 * entropy  # KL of a close student, far below the teacher's entropy
        assert not all(np.array_equal(a, b) for a, b in zip(before, qat.float_model.get_weights()))


def test_early_stopping_judges_val_and_never_sees_eval_data(tmp_path, monkeypatch):
    """With ``eval_data``, epochs are chosen on ``val_data`` only and every reported number is on ``eval_data``
    (benchmarks/qat_real.py used to pick the epoch on the very images its table reports)."""
    from edgeq.qat import pipeline
    from edgeq.qat.pipeline import QATOptions, TrainConfig, finetune

    model_path = tmp_path / "tiny.keras"
    tiny_functional().save(model_path)
    rng = np.random.default_rng(3)
    sets = {name: rng.uniform(0, 1, (n, 12, 12, 1)).astype(np.float32)
            for name, n in (("train", 48), ("val", 20), ("eval", 28))}
    for name, x in sets.items():
        np.savez(tmp_path / f"{name}.npz", x=x)
    seen: list[int] = []
    real_train, real_judge = pipeline.train, pipeline.exported_agreement

    def train_spy(qat, train_ds, val_ds, *args, **kwargs):
        seen.append(len(val_ds))
        return real_train(qat, train_ds, val_ds, *args, **kwargs)

    def judge_spy(qat, ds, *args, **kwargs):
        seen.append(len(ds))
        return real_judge(qat, ds, *args, **kwargs)

    from edgeq.qat import train as train_module

    real_tflite_judge = train_module.tflite_agreement

    def tflite_judge_spy(content, ds, *args, **kwargs):  # QAT or post-training INT8: which to write
        seen.append(len(ds))
        return real_tflite_judge(content, ds, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train", train_spy)
    monkeypatch.setattr(pipeline, "exported_agreement", judge_spy)
    monkeypatch.setattr(train_module, "tflite_agreement", tflite_judge_spy)
    r = finetune(model_path, tmp_path / "train.npz", tmp_path / "val.npz", tmp_path / "out",
                 QATOptions(train=TrainConfig(epochs=1, batch_size=16, calib_samples=32), ptq_calib_samples=32),
                 eval_data=tmp_path / "eval.npz")
    assert seen and set(seen) == {20}  # start, per-epoch judgement and the QAT-or-PTQ choice: val only
    q = r.extra["qat"]
    assert (q["val_samples"], q["eval_samples"], q["eval_is_val"]) == (20, 28, False)
    assert r.accuracy.vs_float.agreement is not None
    # the reported agreement is the shipped model's on eval
    from edgeq import metrics
    from edgeq.runtime import TFLiteRunner

    out = TFLiteRunner(content=Path(r.output).read_bytes()).run({"image": sets["eval"]})[0]
    reference = keras.saving.load_model(model_path).predict(sets["eval"], verbose=0)
    assert r.accuracy.vs_float.agreement == pytest.approx(metrics.agreement(reference, out))


def _tiny_int8(model, path: Path, calib: Path) -> bytes:
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    model.save(path)
    return Path(convert(path, ConvertOptions(mode=Mode.INT8, calib=calib, ptq="plain"),
                        out=path.with_suffix(".tflite")).output).read_bytes()


def test_choice_between_qat_and_post_training_int8_is_made_on_val(tmp_path):
    """The model that agrees better with float on val is written; a tie keeps QAT's."""
    from edgeq.qat.pipeline import _choose

    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, (40, 12, 12, 1)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    model = tiny_functional()
    good = _tiny_int8(model, tmp_path / "good.keras", tmp_path / "calib.npz")
    other = tiny_functional()
    other.set_weights([w[::-1].copy() if w.ndim == 1 else rng.permutation(w.ravel()).reshape(w.shape)
                       for w in other.get_weights()])
    bad = _tiny_int8(other, tmp_path / "bad.keras", tmp_path / "calib.npz")
    val = Dataset({"image": x}, None, Path("val.npz"))
    reference = [model.predict(x, verbose=0)]
    assert _choose(bad, good, val, reference, by_labels=False)["shipped"] == "ptq"
    assert _choose(good, bad, val, reference, by_labels=False)["shipped"] == "qat"
    tie = _choose(good, good, val, reference, by_labels=False)
    assert tie["shipped"] == "qat" and tie["val_qat"] == tie["val_ptq"]
    assert _choose(bad, good, val, reference, by_labels=False, keep_better=False)["shipped"] == "qat"


@pytest.mark.parametrize("keep_better", [True, False])
def test_post_training_int8_is_written_when_qat_loses_on_val(tmp_path, monkeypatch, keep_better):
    """When the choice on val goes to post-training INT8, that model is the output and the report's accuracy
    is its own; QAT's held-out number is still reported. ``keep_better=False`` writes QAT's regardless."""
    from edgeq import metrics
    from edgeq.qat import pipeline
    from edgeq.qat.pipeline import QATOptions, TrainConfig, finetune
    from edgeq.runtime import TFLiteRunner

    model_path = tmp_path / "tiny.keras"
    tiny_functional().save(model_path)
    rng = np.random.default_rng(4)
    sets = {name: rng.uniform(0, 1, (n, 12, 12, 1)).astype(np.float32) for name, n in (("train", 48), ("val", 20))}
    for name, x in sets.items():
        np.savez(tmp_path / f"{name}.npz", x=x)
    # PTQ wins on val; _choose itself is pinned above, here what the pipeline does with its answer
    monkeypatch.setattr(pipeline, "_choose", lambda *a, keep_better, **k: {
        "shipped": "ptq" if keep_better else "qat", "val_qat": "agreement 50.00%, 1.00 dB",
        "val_ptq": "agreement 90.00%, 9.00 dB"})
    r = finetune(model_path, tmp_path / "train.npz", tmp_path / "val.npz", tmp_path / "out",
                 QATOptions(train=TrainConfig(epochs=1, batch_size=16, calib_samples=32), ptq_calib_samples=32,
                            keep_better=keep_better))
    q = r.extra["qat"]
    out = TFLiteRunner(content=Path(r.output).read_bytes()).run({"image": sets["val"]})[0]
    reference = keras.saving.load_model(model_path).predict(sets["val"], verbose=0)
    assert r.accuracy.vs_float.agreement == pytest.approx(metrics.agreement(reference, out))
    assert r.model.fully_integer
    if keep_better:
        assert q["shipped"] == "ptq" and "wrote the post-training INT8 model" in q["summary"]
        assert r.accuracy.vs_float.agreement == q["ptq_agreement"]
    else:
        assert q["shipped"] == "qat" and "post-training INT8 model" not in q["summary"]
        assert r.accuracy.vs_float.agreement == q["qat_agreement"]


def test_separable_conv_block_simulation_is_the_export_up_to_rounding_ties():
    """fer's block (SeparableConv2D + BN + ReLU, SeparableConv2D + BN, max pool, strided 1x1 conv + BN, Add): the
    simulated output is the integer model's to two output steps, equal nearly everywhere. Measured on fer, layer by layer
    fed the integer model's own inputs, the same holds (<= 1 step, on <= 0.2% of elements): the simulation is the
    export, and its 2-4 point agreement gap with the export on 240 faces is such rounding ties compounding
    through 20 layers, not a missing op."""
    from keras import layers

    from edgeq.modes import IOType
    from edgeq.progress import Silent
    from edgeq.qat.export import to_tflite
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, calibrate
    from edgeq.runtime import TFLiteRunner

    rng = np.random.default_rng(4)
    keras.utils.set_random_seed(4)
    inp = keras.Input((16, 16, 4), name="image")
    y = layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="sep1")(inp)
    y = layers.BatchNormalization(name="sep1_bn")(y)
    y = layers.Activation("relu", name="sep1_relu")(y)
    y = layers.SeparableConv2D(8, 3, padding="same", use_bias=False, name="sep2")(y)
    y = layers.BatchNormalization(name="sep2_bn")(y)
    y = layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(y)
    r = layers.Conv2D(8, 1, strides=2, padding="same", use_bias=False, name="res")(inp)
    r = layers.BatchNormalization(name="res_bn")(r)
    out = layers.Add(name="add")([y, r])
    model = keras.Model(inp, out)
    _randomize_bn(model, rng)
    x = rng.uniform(-1, 1, (32, 16, 16, 4)).astype(np.float32)
    qat = rewrite(model)
    calibrate(qat, Dataset({"image": x}, None, Path("x.npz")), TrainConfig(batch_size=32), Silent())
    tfl = TFLiteRunner(content=to_tflite(qat.model, IOType.FLOAT32, Path("m.keras"))).run({"image": x})[0]
    sim = qat.model.predict(x, verbose=0)
    add_q = qat.model.get_layer("add_quant")
    step = (float(add_q.max.numpy()) - float(add_q.min.numpy())) / 255
    steps = np.abs(tfl - sim) / step
    print(f"max {steps.max():.3f} steps, {100 * np.mean(steps > 0.5):.3f}% of elements off")
    # three layers deep: a tie rounded differently in one layer can move the next by one more step
    assert steps.max() <= 2.01
    assert np.mean(steps > 0.5) <= 0.01


def test_frozen_ranges_stay_calibrated_and_logit_student_trains():
    """freeze_ranges keeps every activation range at its calibrated (PTQ) value while weights train;
    student_logits trains the softmax head's int8 logits (the tensor TFLite's SOFTMAX reads) against the
    float model's probabilities: a small non-negative KL, and the weights move."""
    from edgeq.progress import Silent
    from edgeq.qat.rewrite import rewrite
    from edgeq.qat.train import TrainConfig, _logit_student, calibrate, seed_everything, train

    x = np.random.default_rng(2).uniform(0, 1, (64, 12, 12, 1)).astype(np.float32)
    ds = Dataset({"image": x}, None, Path("train.npz"))
    model = tiny_functional()
    seed_everything(0)
    qat = rewrite(model)
    student, swapped = _logit_student(qat.model)
    assert swapped == [True]
    assert student.outputs[0].shape[-1] == 4 and student.outputs[0] is not qat.model.outputs[0]
    cfg = TrainConfig(epochs=1, batch_size=32, learning_rate=1e-3, freeze_ranges=True, student_logits=True,
                      temperature=2.0)
    calibrate(qat, ds, cfg, Silent())
    ranges = [(float(q.min.numpy()), float(q.max.numpy())) for q in qat.quantizers()]
    before = [w.copy() for w in qat.float_model.get_weights()]
    (h,) = train(qat, ds, None, cfg)
    assert -1e-4 < h.loss < 0.5
    assert ranges == [(float(q.min.numpy()), float(q.max.numpy())) for q in qat.quantizers()]
    assert not all(np.array_equal(a, b) for a, b in zip(before, qat.float_model.get_weights()))
