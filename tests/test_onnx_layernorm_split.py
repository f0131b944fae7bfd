"""LayerNorm outlier-channel split: same function in float, far closer to float in full INT8."""
from __future__ import annotations

import numpy as np
import pytest

from edgeq import ConvertOptions, Mode, convert
from edgeq.sources.onnx.rewrites.layernorm_split import layernorm_stats, split_layernorms

H, S, OUTLIER = 32, 16, 5


def _inputs(n: int, seed: int) -> np.ndarray:
    """Token features; channel OUTLIER of the first token is ~100x the rest, as BERT's residual stream."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, S, H)).astype(np.float32)
    x[:, 0, OUTLIER] = rng.uniform(80, 120, n)
    return x.reshape(n, S * H)  # flat: onnx2tf would read a 3-D input as NCW and transpose it


@pytest.fixture(scope="module")
def post_ln_encoder(tmp_path_factory):
    """Two post-LN residual blocks (dense + add + LayerNormalization), mean over tokens: ONNX opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    inits.append(numpy_helper.from_array(np.array([1, S, H], np.int64), "shape"))
    nodes.append(helper.make_node("Reshape", ["x", "shape"], ["tokens"]))
    x = "tokens"
    for k in range(2):
        weight = rng.normal(size=(H, H)) / np.sqrt(H)
        weight[OUTLIER] *= 0.01  # the dense layer does not smear the outlier channel over the others
        w, b = const(f"w{k}", weight), const(f"b{k}", rng.normal(size=H) * 0.1)
        gamma, beta = const(f"g{k}", rng.uniform(0.5, 1.5, H)), const(f"be{k}", rng.normal(size=H) * 0.1)
        nodes += [helper.make_node("MatMul", [x, w], [f"mm{k}"]), helper.make_node("Add", [b, f"mm{k}"], [f"d{k}"]),
                  helper.make_node("Add", [f"d{k}", x], [f"z{k}"]),
                  helper.make_node("LayerNormalization", [f"z{k}", gamma, beta], [f"h{k}"], axis=-1, epsilon=1e-12)]
        x = f"h{k}"
    nodes.append(helper.make_node("ReduceMean", [x], ["y"], axes=[1], keepdims=0))  # axes: attribute in opset 17
    graph = helper.make_graph(nodes, "post_ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, S * H])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, H])], inits)
    folder = tmp_path_factory.mktemp("postln")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    np.savez(folder / "calib.npz", x=_inputs(64, 1))
    np.savez(folder / "eval.npz", x=_inputs(32, 2))
    return folder


def test_split_is_the_same_function_and_finds_the_outlier(post_ln_encoder):
    import onnx
    import onnxruntime as ort

    model = onnx.load(post_ln_encoder / "model.onnx")
    stats = layernorm_stats(model, {"x": _inputs(16, 1)})
    first, second = stats.values()
    assert first.outlier_groups() == [[OUTLIER]]  # the second block's input has no outlier left to split
    assert second.outlier_groups() == []
    assert split_layernorms(model, stats) == 1
    assert [n.op_type for n in model.graph.node].count("LayerNormalization") == 1
    x = _inputs(8, 3)
    before = ort.InferenceSession(str(post_ln_encoder / "model.onnx"))
    after = ort.InferenceSession(model.SerializeToString())
    for i in range(len(x)):
        a, b = before.run(None, {"x": x[i:i + 1]})[0], after.run(None, {"x": x[i:i + 1]})[0]
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_int8_with_split_follows_float_where_plain_int8_does_not(post_ln_encoder, tmp_path):
    def run(split: bool):
        return convert(post_ln_encoder / "model.onnx",
                       ConvertOptions(mode=Mode.INT8, calib=post_ln_encoder / "calib.npz"),
                       out=tmp_path / f"m{split}.tflite", eval_data=post_ln_encoder / "eval.npz",
                       source_options=None if split else {"calibration": None})

    split, plain = run(True), run(False)
    assert any("LayerNorm(s) split" in n for n in split.notes)
    assert not any("LayerNorm(s) split" in n for n in plain.notes)
    assert split.model.fully_integer and split.model.float_ops == []
    assert split.accuracy.vs_float.sqnr_db > plain.accuracy.vs_float.sqnr_db + 6  # at least 4x less error power
    assert split.accuracy.vs_float.cosine > 0.99
