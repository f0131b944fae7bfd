"""edgeq convert: every mode on a real sample model, checked through the real LiteRT interpreter."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq import ConvertOptions, Mode, convert
from edgeq.modelinfo import inspect_tflite
from tests.claims import margin_points, results


@pytest.fixture(scope="module")
def cnn_reports(cnn, tmp_path_factory):
    """One conversion per mode of the sample CNN, with accuracy on its eval set."""
    out = tmp_path_factory.mktemp("cnn")
    return {m: convert(cnn.keras, ConvertOptions(mode=m, calib=cnn.calib), out=out / f"{m.suffix}.tflite",
                       eval_data=cnn.eval) for m in Mode}


def test_int8_is_fully_integer_with_int8_io_and_per_channel_weights(cnn_reports):
    r = cnn_reports[Mode.INT8]
    info = inspect_tflite(r.output)
    assert info.fully_integer, info.float_ops
    assert set(info.tensors_by_dtype) <= {"int8", "int32"}
    assert [t.dtype for t in info.inputs + info.outputs] == ["int8", "int8"]
    assert all(t.scale and t.scale > 0 for t in info.inputs + info.outputs)
    weights = [w for w in info.weights if w.op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D")]
    assert weights and all(w.dtype == "int8" and w.per_channel and w.channels == w.shape[0] for w in weights)
    assert info.all_weights_per_channel


def test_sizes_shrink_as_the_mode_promises(cnn_reports):
    fp32 = cnn_reports[Mode.FP32].size_bytes
    assert all(r.float_size_bytes == fp32 for r in cnn_reports.values())
    assert cnn_reports[Mode.FP16].size_bytes < 0.55 * fp32
    for m in (Mode.INT8, Mode.DYNAMIC, Mode.INT8_FALLBACK, Mode.INT16X8):
        assert cnn_reports[m].size_bytes < 0.35 * fp32, m


def test_each_mode_has_the_dtypes_it_promises(cnn_reports):
    dtypes = {m: set(r.model.tensors_by_dtype) for m, r in cnn_reports.items()}
    assert dtypes[Mode.FP32] <= {"float32", "int32"}
    assert "float16" in dtypes[Mode.FP16]
    assert {"int8", "float32"} <= dtypes[Mode.DYNAMIC]
    assert "int16" in dtypes[Mode.INT16X8]
    fallback = cnn_reports[Mode.INT8_FALLBACK].model
    assert fallback.inputs[0].dtype == "float32" and "QUANTIZE" in fallback.op_counts


def test_accuracy_is_measured_against_the_float_model(cnn_reports):
    fp32 = cnn_reports[Mode.FP32].accuracy
    assert fp32.drop_points == pytest.approx(0.0, abs=1e-9) and fp32.vs_float.agreement == 1.0
    for m in (Mode.INT8, Mode.INT16X8, Mode.FP16, Mode.DYNAMIC):
        a = cnn_reports[m].accuracy
        assert a.samples == 2000
        assert a.float_top1 == fp32.top1
        # README's table (bench_convert, same options, 2,000 eval images no step saw): the drop of each mode,
        # within the noise of a difference on 2,000 images (claims.margin_points: 0.1-0.3 pt here)
        claim = results("bench_convert")["samples"]["fashion_cnn"][m.value]["accuracy"]["drop_points"]
        assert abs(a.drop_points - claim) <= margin_points(a.vs_float.agreement, a.samples), (m, a, claim)
        assert a.vs_float.cosine > 0.99
    # 16-bit activations follow the float model more closely than 8-bit ones.
    assert cnn_reports[Mode.INT16X8].accuracy.vs_float.sqnr_db > cnn_reports[Mode.INT8].accuracy.vs_float.sqnr_db


def test_per_tensor_weights_have_one_scale(cnn, tmp_path):
    r = convert(cnn.keras, ConvertOptions(mode=Mode.INT8, calib=cnn.calib, per_channel=False),
                out=tmp_path / "pt.tflite")
    assert r.model.fully_integer
    assert all(w.channels == 1 for w in r.model.weights)


@pytest.mark.parametrize("io", ["uint8", "float32"])
def test_int8_io_choices(cnn, tmp_path, io, cli):
    res = cli("convert", cnn.keras, "--mode", "int8", "--io", io, "--calib", cnn.calib, "--calib-samples", 50,
              "--out", tmp_path / "m.tflite", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["calib_samples"] == 50
    info = inspect_tflite(tmp_path / "m.tflite")
    assert info.inputs[0].dtype == io and info.outputs[0].dtype == io


def test_cli_json_report_fields(cnn, tmp_path, cli):
    res = cli("convert", cnn.keras, "--mode", "int8", "--calib", cnn.calib, "--eval", cnn.eval,
              "--out", tmp_path / "m.tflite", "--json")
    assert res.code == 0, res.err
    r = json.loads(res.out)
    for key in ("output", "mode", "size_bytes", "float_size_bytes", "tensors_by_dtype", "accuracy"):
        assert key in r
    assert r["mode"] == "int8" and r["fully_integer"] is True
    assert r["size_bytes"] == (tmp_path / "m.tflite").stat().st_size
    # README's table: fashion_cnn int8 top-1 90.90% on the 2,000 eval images; bound by the noise of a
    # difference on 2,000 images against that published model (claims.margin_points, ~0.3 pt)
    claim = results("bench_convert")["samples"]["fashion_cnn"]["int8"]["accuracy"]
    acc = r["accuracy"]
    assert acc["samples"] == claim["samples"] == 2000
    assert abs(100 * (acc["top1"] - claim["top1"])) <= margin_points(acc["vs_float"]["agreement"], acc["samples"])


def test_cli_text_report_and_default_output_beside_input(cnn, tmp_path, cli):
    model = tmp_path / "model.keras"
    model.write_bytes(cnn.keras.read_bytes())
    res = cli("convert", model, "--mode", "fp16")
    assert res.code == 0, res.err
    assert (tmp_path / "model_fp16.tflite").exists()
    assert "x FP32" in res.out and "fp16" in res.out


def test_eval_without_labels_reports_agreement_cosine_sqnr(cnn, tmp_path):
    x = np.load(cnn.eval)["x"][:300]
    np.savez(tmp_path / "unlabeled.npz", x=x)
    r = convert(cnn.keras, ConvertOptions(mode=Mode.DYNAMIC), out=tmp_path / "d.tflite",
                eval_data=tmp_path / "unlabeled.npz")
    a = r.accuracy
    assert a.top1 is None and a.samples == 300
    assert 0.9 < a.vs_float.agreement <= 1.0 and a.vs_float.cosine > 0.99 and a.vs_float.sqnr_db > 15


def test_savedmodel_and_h5_sources_take_the_same_path(cnn, tmp_path):
    import keras

    model = keras.saving.load_model(cnn.keras, compile=False)
    model.export(str(tmp_path / "sm"), verbose=False)
    model.save(tmp_path / "legacy.h5")
    a = convert(tmp_path / "sm", ConvertOptions(mode=Mode.INT8, calib=cnn.calib), out=tmp_path / "a.tflite",
                eval_data=cnn.eval)
    b = convert(tmp_path / "legacy.h5", ConvertOptions(mode=Mode.INT8, calib=cnn.calib), out=tmp_path / "b.tflite",
                eval_data=cnn.eval)
    assert a.source_kind == "savedmodel" and b.source_kind == "keras"
    assert a.model.fully_integer and b.model.fully_integer
    assert a.accuracy.top1 == pytest.approx(b.accuracy.top1, abs=0.005)


def test_image_folder_calibration(cnn, tmp_path):
    from PIL import Image

    x = np.load(cnn.calib)["x"][:20]
    for i, img in enumerate(x):
        Image.fromarray((img[..., 0] * 255).astype(np.uint8)).resize((56, 56)).save(tmp_path / f"{i}.png")
    r = convert(cnn.keras, ConvertOptions(mode=Mode.INT8, calib=tmp_path), out=tmp_path / "m.tflite",
                eval_data=cnn.eval)
    assert r.calib_samples == 20 and r.model.fully_integer
    assert r.accuracy.drop_points < 3


def test_full_int8_refuses_an_op_without_integer_kernel(sin_model, tmp_path, cli):
    out = tmp_path / "sin.tflite"
    res = cli("convert", sin_model, "--mode", "int8", "--calib", sin_model.parent / "calib.npz", "--out", out)
    assert res.code == 2 and "SIN" in res.err and "int8-fallback" in res.err, res.err
    assert not out.exists()
    ok = cli("convert", sin_model, "--mode", "int8-fallback", "--calib", sin_model.parent / "calib.npz",
             "--out", out, "--json")
    assert ok.code == 0, ok.err
    assert json.loads(ok.out)["op_counts"]["SIN"] == 1


@pytest.mark.parametrize("mode,io,per_channel", [
    (Mode.INT8, "int8", True), (Mode.INT8, "uint8", False), (Mode.INT8_FALLBACK, "float32", True),
    (Mode.INT16X8, "float32", True),
])
def test_quantizing_the_fp32_flatbuffer_equals_the_converters_own_path(cnn, mode, io, per_channel):
    """The pipeline calibrates the FP32 reference flatbuffer instead of converting the float graph twice;
    the model must compute exactly what TFLiteConverter.convert() gives."""
    from edgeq.convert import representative_data
    from edgeq.data import load_dataset
    from edgeq.modes import IOType
    from edgeq.progress import Silent
    from edgeq.quantize.converter import ConverterSettings, calibrate_flatbuffer, make_converter
    from edgeq.runtime import TFLiteRunner
    from edgeq.sources import load_float_model

    with load_float_model(cnn.keras) as fm:
        calib = load_dataset(cnn.calib, fm.inputs, limit=100)
        data = load_dataset(cnn.eval, fm.inputs, limit=300)
        fp32 = ConverterSettings(Mode.FP32, IOType.FLOAT32)
        float_bytes = make_converter(fm.saved_model_dir, fp32).convert()
        settings = ConverterSettings(mode, IOType(io), per_channel)
        public = make_converter(fm.saved_model_dir, settings, representative_data(calib, Silent())).convert()
        # The private path itself (no fallback to convert(), which would make this test trivially pass).
        ours = calibrate_flatbuffer(
            float_bytes, make_converter(fm.saved_model_dir, settings, representative_data(calib, Silent())))
    assert len(ours) == len(public)
    a, b = TFLiteRunner(content=ours).run(data.inputs)[0], TFLiteRunner(content=public).run(data.inputs)[0]
    np.testing.assert_array_equal(a, b)
    assert inspect_tflite(content=ours).tensors_by_dtype == inspect_tflite(content=public).tensors_by_dtype
