"""ONNX graphs as stateful and audio exporters write them (silero-vad, openWakeWord): If nodes, inputs without
a batch axis, a Clip floor onnx2tf drops, a graph that reduces over the batch; and the boolean-mask CAST that
kept encoders from being integer-only. Each rewrite must give the same numbers as the graph it replaces."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")  # edgeq[onnx] extra: its absence is a packaging choice, not a broken install
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _ort(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, outputs, inits=(), opset=15):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _branch(name, nodes, out, shape=("N", 4)):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])


def _shape_if_model():
    """``if x.shape[0] == 1: relu(x) else: -x`` - torch.onnx writes such batch checks."""
    c = [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array(1, np.int64), "one")]
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["b"]),
             helper.make_node("Equal", ["b", "one"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="batch_check",
                              then_branch=_branch("t", [helper.make_node("Relu", ["x"], ["t_out"])], "t_out"),
                              else_branch=_branch("e", [helper.make_node("Neg", ["x"], ["e_out"])], "e_out"))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], c)


def test_an_if_on_shapes_is_folded_to_the_branch_taken():
    from edgeq.sources.onnx.rewrites.control_flow import remove_if_nodes

    m = _shape_if_model()
    original = m.SerializeToString()
    for dim in m.graph.input[0].type.tensor_type.shape.dim[:1]:
        dim.Clear()
        dim.dim_value = 1
    x = np.array([[-1.0, 2.0, -3.0, 4.0]], np.float32)
    done = remove_if_nodes(m, [{"x": np.zeros((1, 4), np.float32)}, {"x": x}])
    assert done.folded == ["batch_check"] and not done.left and done.notes()
    assert not [n for n in m.graph.node if n.op_type == "If"]
    ref = _ort(onnx.load_from_string(original)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(_ort(m).run(None, {"x": x})[0], ref)
    np.testing.assert_array_equal(ref, np.maximum(x, 0))  # the branch taken at batch 1, not the other one


def test_an_if_on_data_computes_both_branches_and_selects():
    """openWakeWord's verifier: a second model's score only when the first passes a threshold."""
    from edgeq.sources.onnx.rewrites.control_flow import remove_if_nodes

    c = [numpy_helper.from_array(np.array(0.0, np.float32), "thr"), numpy_helper.from_array(np.full((1, 4), 2.0, np.float32), "two")]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "thr"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], name="verifier",
                              then_branch=_branch("t", [helper.make_node("Mul", ["x", "two"], ["t_out"])], "t_out", [1, 4]),
                              else_branch=_branch("e", [helper.make_node("Identity", ["x"], ["e_out"])], "e_out", [1, 4]))]
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], c)
    original = onnx.load_from_string(m.SerializeToString())
    done = remove_if_nodes(m, [{"x": np.zeros((1, 4), np.float32)}, {"x": np.ones((1, 4), np.float32)}])
    assert done.selected == ["verifier"] and not done.folded and not done.left
    assert [n.op_type for n in m.graph.node if n.op_type in ("If", "Where")] == ["Where"]
    for x in (np.array([[1.0, 2, 3, 4]], np.float32), np.array([[-1.0, -2, 3, -4]], np.float32)):
        np.testing.assert_array_equal(_ort(m).run(None, {"x": x})[0], _ort(original).run(None, {"x": x})[0])


def _stateful_model():
    """silero-vad's interface: audio [N, 8], state [2, N, 8] (batch on axis 1), a scalar sample rate used
    only as ``state + sr * 0``; out = tanh(audio + state[0]) and the new state."""
    c = [numpy_helper.from_array(np.array(0, np.int64), "zero_i")]
    nodes = [helper.make_node("Gather", ["state", "zero_i"], ["h"], axis=0),
             helper.make_node("Add", ["audio", "h"], ["pre"]), helper.make_node("Tanh", ["pre"], ["out"]),
             helper.make_node("Mul", ["sr", "zero_i"], ["sr0"]),
             helper.make_node("Cast", ["sr0"], ["sr0f"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["state", "sr0f"], ["stateN"])]
    return _model(nodes, [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 8]),
                          helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "N", 8]),
                          helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8]),
                   helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "N", 8])], c)


def test_inputs_without_a_leading_batch_axis_get_one():
    from edgeq.sources.onnx.load import fix_shapes, onnx_specs
    from edgeq.sources.onnx.rewrites.batch_axis import lift_inputs

    m = _stateful_model()
    original = onnx.load_from_string(m.SerializeToString())
    declared = onnx_specs(m, m.graph.input)
    fixed = fix_shapes("m.onnx", declared, {"state": (2, 1, 8)}, batch=1)
    specs, lifted = lift_inputs(m, declared, fixed)
    assert lifted == ["sr", "state"]
    assert [s.shape for s in specs] == [(1, 8), (1, 2, 1, 8), (1,)]
    rng = np.random.default_rng(0)
    audio, state = rng.normal(size=(1, 8)).astype(np.float32), rng.normal(size=(2, 1, 8)).astype(np.float32)
    ref = _ort(original).run(None, {"audio": audio, "state": state, "sr": np.array(16000, np.int64)})
    got = _ort(m).run(None, {"audio": audio, "state": state[None], "sr": np.array([16000], np.int64)})
    for r, g in zip(ref, got):
        np.testing.assert_array_equal(r, g)


def test_a_positive_clip_floor_survives_as_relu_shift():
    from edgeq.sources.onnx.rewrites.clip_floor import clip_floors_to_max

    c = [numpy_helper.from_array(np.array(1e-10, np.float32), "lo"),
         numpy_helper.from_array(np.array(np.inf, np.float32), "hi"),
         numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    nodes = [helper.make_node("Clip", ["x", "lo", "hi"], ["c"]), helper.make_node("Log", ["c"], ["y"]),
             helper.make_node("Clip", ["x", "zero", "hi"], ["r"])]  # a ReLU: left for onnx2tf to fuse
    m = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]),
                helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, 5])], c)
    original = onnx.load_from_string(m.SerializeToString())
    assert clip_floors_to_max(m) == 1
    assert [n.op_type for n in m.graph.node].count("Clip") == 1
    x = np.array([[0.0, 1e-12, 1e-10, 3e-5, 7.0]], np.float32)
    for r, g in zip(_ort(original).run(None, {"x": x}), _ort(m).run(None, {"x": x})):
        np.testing.assert_allclose(g, r, rtol=1e-6)  # log(1e-10) = -23.03 at the floor, not -inf


def test_stateful_model_with_control_flow_converts_faithfully_to_int8(tmp_path):
    """The whole route: If folding, batch-axis lifting and row-by-row reference in one edgeq conversion of
    a graph that also reduces over everything (openWakeWord's top-dB clip: its meaning is per sample)."""
    from edgeq import ConvertOptions, Mode, convert

    m = _stateful_model()
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "half"))
    g.node.extend([helper.make_node("ReduceMax", ["out"], ["peak"], keepdims=0),
                   helper.make_node("Mul", ["peak", "half"], ["floor"]),
                   helper.make_node("Max", ["out", "floor"], ["score"])])
    g.output.append(helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 8]))
    path = tmp_path / "stateful.onnx"
    onnx.save(m, str(path))
    rng = np.random.default_rng(1)
    n = 48
    calib = tmp_path / "calib.npz"
    np.savez(calib, audio=rng.normal(size=(n, 8)).astype(np.float32),
             state=rng.normal(size=(n, 2, 1, 8)).astype(np.float32), sr=np.full(n, 16000, np.int64))
    rep = convert(path, ConvertOptions(mode=Mode.INT8, calib=calib), out=tmp_path / "s.tflite",
                  input_shapes={"state": (2, 1, 8)})
    fid = rep.extra["fidelity"]
    assert fid["cosine"] > 0.9999, fid  # per-sample reference: a batched one would disagree on 'score'
    assert any("no leading batch axis" in note for note in rep.notes)
    # state as [1, 2, 1, 8] (onnx2tf may make it channel-last, [1, 1, 8, 2]); sr as [1]
    assert sorted(int(np.prod(t.shape)) for t in rep.model.inputs) == [1, 8, 16]
    assert all(t.shape[0] == 1 for t in rep.model.inputs)
    # every op computes in integers; the sample rate still enters as CAST(int -> float) + QUANTIZE
    assert rep.model.float_ops == []


def test_per_sample_outputs_without_a_batch_axis_are_stacked():
    from edgeq.runtime import join_rows

    state = [np.full((2, 1, 3), i, np.float32) for i in range(4)]
    assert join_rows(state, per_sample=True).shape == (4, 2, 1, 3)
    rows = [np.full((1, 5), i, np.float32) for i in range(4)]
    assert join_rows(rows, per_sample=True).shape == (4, 5)
    batches = [np.zeros((64, 5), np.float32), np.zeros((64, 5), np.float32)]
    assert join_rows(batches, per_sample=False).shape == (128, 5)


def test_channel_first_data_of_any_rank_is_moved_to_channel_last():
    from edgeq.data import _fit_shape
    from edgeq.sources.base import TensorSpec

    notes: list[str] = []
    a = np.arange(2 * 16 * 96, dtype=np.float32).reshape(2, 16, 96)  # ONNX [N, C, W] for an NWC model
    got = _fit_shape("x.npz", TensorSpec("x", (1, 96, 16), "float32"), a, None, notes)
    np.testing.assert_array_equal(got, a.transpose(0, 2, 1))
    assert notes and "channel-first" in notes[0]


def test_bool_mask_cast_becomes_an_integer_select(tmp_path):
    """LOGICAL/compare -> CAST(float) -> QUANTIZE, as an encoder's attention mask: the same int8 values
    from SELECT_V2, and no float tensor left."""
    import tensorflow as tf

    from edgeq.modelinfo import inspect_tflite
    from edgeq.runtime import TFLiteRunner
    from edgeq.tflite.transforms.bool_select import bool_casts_as_select
    from tests.conftest import tf_to_tflite

    w = tf.constant(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32), tf.TensorSpec([1, 8], tf.int32)])
    def f(x, mask):
        keep = tf.cast(tf.greater(mask, 0), tf.float32)
        return tf.matmul(x * keep, w)

    rng = np.random.default_rng(1)

    def rep():
        for _ in range(32):
            yield [rng.normal(size=(1, 8)).astype(np.float32), rng.integers(0, 2, (1, 8)).astype(np.int32)]

    content = tf_to_tflite(f, rep)
    new, n = bool_casts_as_select(content)
    if n == 0:
        pytest.skip("this converter version wrote no CAST(bool->float) + QUANTIZE pair")  # pattern absent: nothing to pin
    assert not inspect_tflite(content=content).fully_integer and inspect_tflite(content=new).fully_integer
    feeds = {"x": rng.normal(size=(16, 8)).astype(np.float32), "mask": rng.integers(0, 2, (16, 8)).astype(np.int32)}
    for a, b in zip(TFLiteRunner(content=content).run(feeds), TFLiteRunner(content=new).run(feeds)):
        np.testing.assert_array_equal(a, b)


def _lstm_cell_tflite(hidden: int = 16, feat: int = 8) -> bytes:
    """A float LSTM cell as onnx2tf lowers a one-step ONNX LSTM: h and c gathered from one ``state`` input
    ([2, 1, H]), FULLY_CONNECTED over concat([features, h]), gates, and the new state concatenated back."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w0 = tf.constant(rng.normal(0, 0.5, (feat, hidden)).astype(np.float32))
    w = tf.constant(rng.normal(0, 0.3, (2 * hidden, 4 * hidden)).astype(np.float32))
    b = tf.constant(rng.normal(0, 0.1, (4 * hidden,)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, feat], tf.float32), tf.TensorSpec([2, 1, hidden], tf.float32)])
    def cell(x, state):
        h = tf.reshape(tf.gather(state, [0]), [1, hidden])
        c = tf.reshape(tf.gather(state, [1]), [1, hidden])
        z = tf.matmul(tf.concat([tf.nn.relu(tf.matmul(x, w0)), h], 1), w) + b
        i, f, g, o = tf.split(z, 4, axis=1)
        c2 = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h2 = tf.sigmoid(o) * tf.tanh(c2)
        return tf.sigmoid(tf.reduce_sum(h2, 1, keepdims=True)), tf.concat([h2[None], c2[None]], 0)

    return tf.lite.TFLiteConverter.from_concrete_functions([cell.get_concrete_function()], cell).convert()


def _cell_feeds(n: int, hidden: int = 16, feat: int = 8) -> list[dict[str, np.ndarray]]:
    """Samples whose cell state c spans far more than h (silero: h in [-1, 1], c in [-40, 20])."""
    rng = np.random.default_rng(1)
    h = np.tanh(rng.normal(0, 1, (n, 1, 1, hidden)))
    c = rng.normal(0, 12, (n, 1, 1, hidden))
    return [{"x": rng.normal(0, 1, (1, feat)).astype(np.float32),
             "state": np.concatenate([h[k], c[k]]).astype(np.float32)} for k in range(n)]


def _run_cell(content: bytes, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Each output on each sample (the state has no batch axis), int8 I/O (de)quantized with its own scale."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    it.allocate_tensors()
    ins = {d["name"].split(":")[0].removeprefix("serving_default_"): d for d in it.get_input_details()}
    outs = []
    for f in feeds:
        for name, d in ins.items():
            x, (scale, zp) = f[name], d["quantization"]
            it.set_tensor(d["index"], np.round(x / scale + zp).clip(-128, 127).astype(np.int8) if scale else x)
        it.invoke()
        outs.append(np.concatenate([(it.get_tensor(d["index"]).astype(np.float32) - d["quantization"][1])
                                    * d["quantization"][0] if d["quantization"][0] else it.get_tensor(d["index"])
                                    for d in it.get_output_details()], axis=None))
    return outs


def test_fc_over_concat_with_the_state_input_is_split_exactly():
    """FC(concat(features, h)) becomes FC(features) + FC(h): same float numbers, nothing left to split, and a
    concatenation without a part read from a model input is left alone."""
    import tensorflow as tf

    from edgeq.tflite import flatbuffer as fb
    from edgeq.tflite.transforms.state_concat import split_state_concats

    content = _lstm_cell_tflite()
    new, n = split_state_concats(content)
    assert n == 1
    def kinds(c: bytes) -> list[str]:
        m = fb.load(c)
        return [fb.op_names(m)[op.opcodeIndex] for op in m.subgraphs[0].operators]

    before, after = kinds(content), kinds(new)
    assert after.count("FULLY_CONNECTED") == before.count("FULLY_CONNECTED") + 1
    assert after.count("CONCATENATION") == before.count("CONCATENATION") - 1  # the state output's concat stays
    assert split_state_concats(new) == (new, 0)
    feeds = _cell_feeds(16)
    np.testing.assert_allclose(_run_cell(content, feeds), _run_cell(new, feeds), rtol=1e-5, atol=1e-5)

    w = tf.constant(np.ones((8, 4), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32), tf.TensorSpec([1, 4], tf.float32)])
    def features_only(x, y):
        return tf.matmul(tf.concat([tf.nn.relu(x), tf.tanh(y)], 1), w)

    plain = tf.lite.TFLiteConverter.from_concrete_functions([features_only.get_concrete_function()],
                                                            features_only).convert()
    assert split_state_concats(plain) == (plain, 0)


def test_lstm_cell_with_a_carried_state_quantizes_to_full_int8():
    """silero-vad's failure in small. Without the split the concat's scale (features and h, about +-3) reaches
    c (about +-40) through the shared state: in silero the quantizer then leaves c's RESHAPE and the forget-gate
    MUL in float; in this cell it keeps them integer but clips c to h's range (output cosine 0.68). With it
    every op is integer, the state input and output are int8, and the int8 cell follows the float one."""
    from edgeq.modelinfo import inspect_tflite
    from edgeq.modes import IOType
    from edgeq.quantize.selective import Calibrated

    content = _lstm_cell_tflite()
    calib = _cell_feeds(64)
    q = Calibrated.from_float_flatbuffer(content, lambda: iter(calib), True, IOType.INT8, "cell").quantize()
    info = inspect_tflite(content=q)
    assert info.float_ops == [] and info.fully_integer, info.float_ops
    assert [t.dtype for t in info.inputs + info.outputs] == ["int8"] * 4
    feeds = _cell_feeds(32)
    r = np.stack(_run_cell(content, feeds)).ravel().astype(np.float64)
    g = np.stack(_run_cell(q, feeds)).ravel().astype(np.float64)
    assert r @ g / np.linalg.norm(r) / np.linalg.norm(g) > 0.99


def test_an_integer_input_kept_alive_as_times_zero_leaves_no_float_tensor():
    """silero-vad adds float(sr * 0) to its state so sr stays an input: CAST(int -> float) + QUANTIZE, a float
    tensor in the int8 model. The quantized zero becomes a constant: same int8 outputs, integer-only, and the
    integer input still in the signature."""
    import tensorflow as tf

    from edgeq.modelinfo import inspect_tflite
    from edgeq.tflite.transforms.zero_casts import zero_integer_casts

    w = tf.constant(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32), tf.TensorSpec([1], tf.int32)])
    def f(x, sr):
        return tf.matmul(x, w) + tf.cast(sr * 0, tf.float32)

    rng = np.random.default_rng(1)

    def rep():
        for _ in range(32):
            yield [rng.normal(size=(1, 8)).astype(np.float32), np.array([16000], np.int32)]

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    content = conv.convert()
    new, n = zero_integer_casts(content)
    if n == 0:
        pytest.skip("this converter version folded sr * 0 away")  # pattern absent: nothing to pin
    assert not inspect_tflite(content=content).fully_integer and inspect_tflite(content=new).fully_integer
    assert zero_integer_casts(new) == (new, 0)
    from ai_edge_litert.interpreter import Interpreter

    def run(c: bytes, x: np.ndarray, sr: np.ndarray) -> np.ndarray:
        it = Interpreter(model_content=c)
        it.allocate_tensors()
        assert len(it.get_input_details()) == 2  # sr stays in the signature, unread
        for d in it.get_input_details():
            it.set_tensor(d["index"], x if d["dtype"] == np.int8 else sr)
        it.invoke()
        return it.get_tensor(it.get_output_details()[0]["index"])

    for k in range(8):
        x = rng.integers(-128, 128, (1, 8)).astype(np.int8)
        sr = np.array([8000 * k], np.int32)
        np.testing.assert_array_equal(run(content, x, sr), run(new, x, sr))
