"""Exact rewrites into ops XNNPACK delegates: SLICE 'to the end' with explicit sizes, nearest-neighbour
upsampling by integer factors as concatenation + reshape. Same numbers bit for bit, float and int8, and
the delegate then takes the graph whole."""
from __future__ import annotations

import numpy as np
import pytest

import tensorflow as tf  # a hard dependency: broken, it must fail the tests, not skip them

from edgeq.tflite.transforms.xnnpack_exact import xnnpack_exact_rewrites
from edgeq.tflite.xnnpack import coverage
from tests.conftest import tf_to_tflite


def _model(int8: bool) -> bytes:
    """YOLO-neck-like: a split by slices 'to the end', x2 and x4 nearest upsampling, a conv after."""
    w = tf.constant(np.random.default_rng(0).normal(0, 0.3, (3, 3, 8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 6, 5, 8], tf.float32)])
    def f(x):
        a = tf.slice(x, [0, 0, 0, 0], [-1, -1, -1, 4])
        b = tf.slice(x, [0, 0, 0, 4], [-1, -1, -1, -1])
        up2 = tf.image.resize(tf.concat([b, a], -1), (12, 10), method="nearest")
        up4 = tf.compat.v1.image.resize_nearest_neighbor(x, (24, 20), half_pixel_centers=True)
        y = tf.nn.conv2d(up2, w, 1, "SAME") + tf.nn.max_pool2d(tf.nn.conv2d(up4, w, 1, "SAME"), 2, 2, "VALID")
        return tf.nn.relu(y)

    rng = np.random.default_rng(1)
    return tf_to_tflite(f, (lambda: ([rng.uniform(-1, 1, (1, 6, 5, 8)).astype(np.float32)] for _ in range(16)))
                        if int8 else None)


def _run(content: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.mark.parametrize("int8", [False, True], ids=["fp32", "int8"])
def test_slices_and_nearest_upsampling_become_delegated_with_the_same_numbers(int8):
    content = _model(int8)
    before = coverage(content).to_dict()
    assert not before["whole"] and any(k.startswith("RESIZE_NEAREST_NEIGHBOR") for k in before["left_on_cpu"]), before
    assert any(k.startswith("SLICE") for k in before["left_on_cpu"]), before
    new, counts = xnnpack_exact_rewrites(content)
    assert counts.get("RESIZE_NEAREST_NEIGHBOR") == 2 and counts.get("SLICE", 0) >= 1, counts
    after = coverage(new).to_dict()
    assert after["whole"] and after["partitions"] == 1, after["summary"]
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = rng.uniform(-1, 1, (1, 6, 5, 8)).astype(np.float32)
        if int8:
            x = rng.integers(-128, 128, (1, 6, 5, 8)).astype(np.int8)
        np.testing.assert_array_equal(_run(new, x), _run(content, x))


def test_a_model_without_those_ops_is_returned_unchanged():
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        return tf.nn.relu(x)

    content = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    assert xnnpack_exact_rewrites(content) == (content, {})


def test_the_model_is_run_for_its_shapes_only_when_a_candidate_passes_the_static_checks(monkeypatch):
    """A float RELU and an int8 ADD of two activations are candidates by op but fail the type/operand checks:
    nothing runs the model (allocating and invoking costs as much as the whole pass)."""
    import edgeq.tflite.transforms.xnnpack_exact as xe

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def f(x):
        return tf.nn.relu(x) + x * 2.0

    calls = []
    monkeypatch.setattr(xe, "_runtime_shapes", lambda content: calls.append(1) or {})
    for content in (tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert(),
                    tf_to_tflite(f, lambda: ([np.full((1, 8), v, np.float32)] for v in (-1.0, 1.0)))):
        assert xnnpack_exact_rewrites(content) == (content, {})
    assert calls == []


def test_int8_ops_that_return_their_input_are_removed_and_the_graph_is_delegated_whole():
    """oww_embedding's int8 MAXIMUM(x, -128) after every LeakyReLU (19 of them): the identity on int8, but a
    float-only op for XNNPACK, so each split the graph. A real clamp (MAXIMUM with 0) is kept."""
    from edgeq.tflite import flatbuffer as fb

    w = tf.constant(np.random.default_rng(0).normal(0, 0.3, (8, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def f(x):
        y = tf.matmul(tf.maximum(tf.matmul(x, w), -1e6), w)  # the constant quantizes to -128
        return tf.matmul(tf.maximum(y, 0.25), w)  # a clamp inside the range: not a no-op

    rng = np.random.default_rng(1)
    content = tf_to_tflite(f, lambda: ([rng.uniform(-1, 1, (1, 8)).astype(np.float32)] for _ in range(16)))
    model = fb.load(content)
    names = fb.op_names(model)
    assert [names[op.opcodeIndex] for op in model.subgraphs[0].operators].count("MAXIMUM") == 2
    new, counts = xnnpack_exact_rewrites(content)
    assert counts == {"no-op MAXIMUM": 1}, counts
    assert coverage(new).left == {"MAXIMUM int8": 1}, coverage(new).summary
    for _ in range(3):
        x = rng.integers(-128, 128, (1, 8)).astype(np.int8)
        np.testing.assert_array_equal(_run(new, x), _run(content, x))


def test_a_no_op_at_the_graph_output_is_removed_and_the_output_keeps_its_tensor():
    """oww_melspectrogram's int8 model ends in MINIMUM(x, 127): the output's producer now writes the output."""
    from ai_edge_litert.interpreter import Interpreter

    w = tf.constant(np.random.default_rng(0).normal(0, 0.3, (8, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def f(x):
        return tf.minimum(tf.matmul(x, w), 1e6)  # the constant quantizes to 127

    rng = np.random.default_rng(1)
    content = tf_to_tflite(f, lambda: ([rng.uniform(-1, 1, (1, 8)).astype(np.float32)] for _ in range(16)))
    new, counts = xnnpack_exact_rewrites(content)
    assert counts == {"no-op MINIMUM": 1}, counts
    assert coverage(new).whole, coverage(new).summary

    def output_name(c):
        return Interpreter(model_content=c).get_output_details()[0]["name"]

    assert output_name(new) == output_name(content)
    for _ in range(3):
        x = rng.integers(-128, 128, (1, 8)).astype(np.int8)
        np.testing.assert_array_equal(_run(new, x), _run(content, x))


def _run_time_sized_model() -> bytes:
    """x -> SHAPE -> RESHAPE(x, shape) -> SLICE(to the end) -> SLICE(to the end): LiteRT sizes the slices'
    outputs only when it runs, so after allocation the first slice's output keeps its stored placeholder
    [1, 1, 1, 6] (as YOLOv8n's int8 model from the quantizer does)."""
    from edgeq.tflite import flatbuffer as fb

    sc = fb.schema()
    m = sc.ModelT()
    m.version, m.buffers = 3, [sc.BufferT()]

    def tensor(shape, ttype, name, value=None, sig=None):
        t = sc.TensorT()
        t.shape, t.type, t.name, t.buffer = np.array(shape, np.int32), ttype, name, 0
        t.shapeSignature = None if sig is None else np.array(sig, np.int32)
        if value is not None:
            b = sc.BufferT()
            b.data = np.frombuffer(np.asarray(value, np.int32).tobytes(), np.uint8)
            m.buffers.append(b)
            t.buffer = len(m.buffers) - 1
        return t

    f32, i32 = sc.TensorType.FLOAT32, sc.TensorType.INT32
    g = sc.SubGraphT()
    g.tensors = [tensor([1, 4, 4, 8], f32, "x"), tensor([4], i32, "shape"),
                 tensor([1, 1, 1, 8], f32, "reshaped", sig=[-1, -1, -1, 8]),
                 tensor([4], i32, "begin", [0, 0, 0, 2]), tensor([4], i32, "size", [-1, -1, -1, -1]),
                 tensor([1, 1, 1, 6], f32, "y", sig=[-1, -1, -1, 6]), tensor([4], i32, "begin2", [0, 0, 0, 1]),
                 tensor([1, 1, 1, 5], f32, "z", sig=[-1, -1, -1, 5])]
    m.operatorCodes = []
    for b in (sc.BuiltinOperator.SHAPE, sc.BuiltinOperator.RESHAPE, sc.BuiltinOperator.SLICE):
        c = sc.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = b
        c.version = 1
        m.operatorCodes.append(c)

    def op(code, ins, outs):
        o = sc.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = code, np.array(ins, np.int32), np.array(outs, np.int32)
        return o

    shape = op(0, [0], [1])
    shape.builtinOptionsType, shape.builtinOptions = sc.BuiltinOptions.ShapeOptions, sc.ShapeOptionsT()
    shape.builtinOptions.outType = i32
    g.operators = [shape, op(1, [0, 1], [2]), op(2, [2, 3, 4], [5]), op(2, [5, 6, 4], [7])]
    g.inputs, g.outputs = np.array([0], np.int32), np.array([7], np.int32)
    m.subgraphs = [g]
    return fb.dump(m)


def test_slice_sizes_come_from_the_shapes_litert_computes_while_running():
    from edgeq.tflite import flatbuffer as fb

    content = _run_time_sized_model()
    new, counts = xnnpack_exact_rewrites(content)
    assert counts == {"SLICE": 2}  # sizes from the placeholder would give [1, 1, 1, 5]: wrong, so dropped
    model = fb.load(new)
    sg = model.subgraphs[0]
    assert fb.int32_const(model, sg, int(sg.operators[3].inputs[2])).tolist() == [1, 4, 4, 5]
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 8)).astype(np.float32)
    assert np.array_equal(_run(new, x), _run(content, x)) and _run(new, x).shape == (1, 4, 4, 5)
