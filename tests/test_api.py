"""edgeq.api: every workflow from Python with data (and models) held in memory, no files in between."""
from __future__ import annotations

import numpy as np
import pytest

import edgeq
from edgeq.errors import DataError, EdgeqError, OptionError


@pytest.fixture(scope="module")
def arrays(cnn):
    """fashion_cnn's calibration and eval sets as plain numpy arrays (what a user has in a notebook)."""
    with np.load(cnn.calib) as c, np.load(cnn.eval) as e:
        return {"calib": c["x"][:64].copy(), "x": e["x"][:300].copy(), "y": e["y"][:300].copy()}


@pytest.fixture(scope="module")
def keras_model(cnn):
    import keras

    return keras.saving.load_model(str(cnn.keras), compile=False)


@pytest.fixture(scope="module")
def int8(cnn, arrays, tmp_path_factory):
    """One full-INT8 conversion from arrays, shared by the tests that need a converted model."""
    out = tmp_path_factory.mktemp("api") / "cnn_int8.tflite"
    report = edgeq.convert(cnn.keras, edgeq.ConvertOptions(mode="int8", ptq="plain", calib=arrays["calib"]),
                           out=out, eval_data=(arrays["x"], arrays["y"]))
    return report


def test_options_take_strings_and_refuse_unknown_values():
    o = edgeq.ConvertOptions(mode="int8", io="uint8", ptq="plain", metric="cosine", fallback="fp32")
    assert (o.mode, o.io, o.ptq, o.metric, o.fallback) == (edgeq.Mode.INT8, edgeq.IOType.UINT8,
                                                            edgeq.PtqChoice.PLAIN, edgeq.Metric.COSINE,
                                                            edgeq.Fallback.FP32)
    assert o.mode.needs_calibration  # the AttributeError of issue 15
    with pytest.raises(OptionError, match=r"mode='int9' is not valid; use one of: fp32, fp16, dynamic, int8"):
        edgeq.ConvertOptions(mode="int9")
    with pytest.raises(EdgeqError, match="metric"):
        edgeq.AnalyzeOptions(metric="top5")
    with pytest.raises(EdgeqError, match="runs"):
        edgeq.BenchOptions(runs=0)
    assert edgeq.BenchOptions(targets="host", threads=2).targets == ("host",)


def test_convert_int8_from_arrays_reports_accuracy(int8, arrays):
    assert int8.model.fully_integer and int8.mode == "int8"
    assert int8.calib_samples == 64
    acc = int8.accuracy
    assert acc.samples == 300 and acc.data == "eval_data ((x, y) tuple)"
    assert acc.top1 > 0.8 and abs(acc.drop_points) < 3
    assert int8.to_dict()["schema"] == 1


def test_convert_in_memory_keras_model_with_tf_data(keras_model, arrays, tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)  # an in-memory model has no folder: the default output is ./<name>_<mode>
    calib = tf.data.Dataset.from_tensor_slices(arrays["calib"]).batch(16)
    report = edgeq.convert(keras_model, edgeq.ConvertOptions(mode="int16x8", calib=calib, calib_samples=32),
                           eval_data=iter(zip(arrays["x"][:50], arrays["y"][:50])))
    assert report.source == f"<keras.Model '{keras_model.name}'>"
    assert (tmp_path / f"{keras_model.name}_int16x8.tflite").is_file()
    assert report.calib_samples == 32 and report.accuracy.samples == 50
    assert report.accuracy.vs_float.agreement > 0.9  # the generator was read once for float and converted model


def test_bad_in_memory_data_names_the_argument(cnn, arrays, tmp_path):
    with pytest.raises(DataError, match=r"^calib \(numpy array\): array for input .* is int32"):
        edgeq.convert(cnn.keras, edgeq.ConvertOptions(mode="int8", calib=arrays["calib"].astype(np.int32)),
                      out=tmp_path / "m.tflite")
    with pytest.raises(DataError, match=r"eval_data \(generator\): samples of .x. differ in shape"):
        edgeq.convert(cnn.keras, edgeq.ConvertOptions(mode="fp16"), out=tmp_path / "m.tflite",
                      eval_data=(x for x in [np.zeros((2, 28, 28, 1), np.float32), np.zeros((2, 27, 28, 1), np.float32)]))
    assert not (tmp_path / "m.tflite").exists()


def test_missing_calibration_speaks_of_the_argument(cnn, tmp_path):
    with pytest.raises(EdgeqError, match=r"`mode=int8` needs calibration data; give `calib=DATA`"):
        edgeq.convert(cnn.keras, edgeq.ConvertOptions(mode="int8"), out=tmp_path / "m.tflite")


def test_inspect_and_evaluate_bytes_with_tf_data(int8, arrays, cnn):
    import tensorflow as tf

    content = open(int8.output, "rb").read()
    info = edgeq.inspect(content)
    assert info.fully_integer and info.inputs[0].dtype == "int8"
    data = tf.data.Dataset.from_tensor_slices((arrays["x"], arrays["y"])).batch(32)
    res = edgeq.evaluate(content, data, reference=cnn.keras, options=edgeq.EvalOptions(eval_samples=100))
    assert res.samples == 100 and res.top1 is not None and res.float_top1 is not None
    assert res.vs_float.agreement > 0.9


def test_analyze_arrays(cnn, arrays):
    sens = edgeq.analyze(cnn.keras, arrays["calib"][:32], (arrays["x"][:64], arrays["y"][:64]),
                         edgeq.AnalyzeOptions(metric="agreement"))
    assert sens.samples == 64 and sens.metric is edgeq.Metric.AGREEMENT
    assert sens.layers and {s.op for s in sens.layers} >= {"CONV_2D"}


def test_bench_and_compare_in_memory(int8, arrays, tmp_path):
    results = edgeq.bench([int8.output], edgeq.BenchOptions(runs=3, warmup=1, inputs=arrays["x"][:1]),
                          out_dir=tmp_path / "b")
    assert len(results) == 1 and results[0].ok, results[0].error
    assert (tmp_path / "b" / "bench.json").is_file()
    cmp = edgeq.compare([int8.output], edgeq.CompareOptions(results=results, reports=[int8]))
    v = cmp.variants[0]
    assert v.accuracy.metric == "top1" and abs(v.accuracy.value - 100 * int8.accuracy.top1) < 1e-9
    assert v.latency["host"].ok
    measured = edgeq.compare([int8.output], edgeq.CompareOptions(results=results,
                                                                 eval_data={"x": arrays["x"][:100],
                                                                            "y": arrays["y"][:100]}))
    assert measured.variants[0].accuracy.source == "eval_data (dict of arrays)"


@pytest.mark.slow
def test_finetune_arrays(keras_model, arrays, tmp_path):
    report = edgeq.finetune(keras_model, (arrays["x"][:256], arrays["y"][:256]), (arrays["x"][256:], arrays["y"][256:]),
                            tmp_path / "qat", edgeq.FinetuneOptions(epochs=1, batch_size=64, ptq_calib_samples=64,
                                                                    io="int8"))
    assert report.model.fully_integer and report.accuracy.samples == 44
    assert (tmp_path / "qat" / f"{keras_model.name}_qat_int8.tflite").is_file()
    assert report.source == f"<keras.Model '{keras_model.name}'>"


@pytest.mark.slow
def test_multi_input_encoder_from_a_dict_of_arrays(tmp_path):
    """docs/your-model.md's encoder example: one array per input name, ONNX shapes fixed by name."""
    from conftest import SAMPLES

    enc = SAMPLES / "tiny_encoder"
    with np.load(enc / "calib.npz") as z:
        tokens = {"input_ids": z["input_ids"][:32].copy(), "attention_mask": z["attention_mask"][:32].copy()}
    report = edgeq.convert(enc / "model.onnx", edgeq.ConvertOptions(mode="int16x8", calib=tokens),
                           input_shapes={"input_ids": (1, 16), "attention_mask": (1, 16)},
                           out=tmp_path / "enc.tflite", eval_data=tokens)
    assert report.accuracy.data == "eval_data (dict of arrays)" and report.accuracy.samples == 32
    assert report.accuracy.vs_float.cosine > 0.999
    with pytest.raises(DataError, match=r"calib \(dict of arrays\): no array for input\(s\) attention_mask"):
        edgeq.convert(enc / "model.onnx", edgeq.ConvertOptions(mode="int16x8",
                                                               calib={"input_ids": tokens["input_ids"]}),
                      input_shapes={"input_ids": (1, 16), "attention_mask": (1, 16)}, out=tmp_path / "bad.tflite")


def test_every_mode_has_one_spec_and_the_converter_settings_follow_it():
    """The mode registry (``edgeq.modes.MODES``): each mode is defined once, and its answers agree."""
    from edgeq.modes import MODES, IOType, Mode

    assert set(MODES) == set(Mode)
    for mode, spec in MODES.items():
        assert mode.needs_calibration == spec.calibrated
        assert not spec.integer_only or (spec.calibrated and spec.int8_activations and spec.op_set == "int8")
        assert not spec.fp16_weights or not spec.calibrated
        assert spec.default_io is (IOType.INT8 if spec.integer_only else IOType.FLOAT32)
    assert [m for m in Mode if not m.spec.optimize] == [Mode.FP32]
