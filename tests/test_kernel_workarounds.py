"""int8 models with the inputs LiteRT kernels get wrong: edgeq's output is right under every kernel."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from edgeq import ConvertOptions, Mode, convert
from edgeq.modelinfo import inspect_tflite
from edgeq.quantize.kernel_workarounds import fix_int8_kernels, requantized_inputs


def _save(module, folder, **arrays):
    import tensorflow as tf

    tf.saved_model.save(module, str(folder / "saved_model"), signatures={"serving_default": module.__call__})
    for name, data in arrays.items():
        np.savez(folder / f"{name}.npz", **data)
    return folder


@pytest.fixture(scope="module")
def attention_like(tmp_path_factory):
    """probs @ V as in attention: both inputs are activations, V's range is one-sided (zero point != 0)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Attn(tf.Module):
        def __init__(self):
            self.wq = tf.Variable(rng.normal(size=(16, 16)).astype(np.float32) / 4)
            self.wv = tf.Variable(rng.normal(size=(16, 16)).astype(np.float32) / 4)

        @tf.function(input_signature=[tf.TensorSpec([1, 12, 16], tf.float32, name="x")])
        def __call__(self, x):
            scores = tf.matmul(tf.matmul(x, self.wq), x, transpose_b=True)
            v = tf.nn.relu(tf.matmul(x, self.wv)) + 0.5  # one-sided: the converter gives it zero point -128
            return {"y": tf.matmul(tf.nn.softmax(scores), v)}

    return _save(Attn(), tmp_path_factory.mktemp("attn"),
                 calib={"x": rng.normal(size=(64, 12, 16)).astype(np.float32)},
                 eval={"x": rng.normal(size=(16, 12, 16)).astype(np.float32)})


@pytest.fixture(scope="module")
def mean_pooling(tmp_path_factory):
    """Masked mean as sentence encoders pool: x summed over kept positions, divided by their count."""
    import tensorflow as tf

    rng = np.random.default_rng(1)

    class Pool(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16, 4], tf.float32, name="x"),
                                      tf.TensorSpec([1, 16], tf.float32, name="mask")])
        def __call__(self, x, mask):
            count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
            return {"y": tf.reduce_sum(x * mask[..., None], axis=1) / count}

    def masks(n):  # first k positions kept, k = 1..16: the count reaches every value, 8 included
        return (np.arange(16)[None] < (np.arange(n) % 16 + 1)[:, None]).astype(np.float32)

    return _save(Pool(), tmp_path_factory.mktemp("pool"),
                 calib={"x": rng.uniform(0, 1, (64, 16, 4)).astype(np.float32), "mask": masks(64)},
                 eval={"x": rng.uniform(0, 1, (16, 16, 4)).astype(np.float32), "mask": masks(16)})


def _outputs(content: bytes, data: dict, xnnpack: bool) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=content, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    o = it.get_output_details()[0]
    out = []
    for k in range(len(next(iter(data.values())))):
        for i in it.get_input_details():
            x = data[next(n for n in data if n in i["name"])][k][None]
            s, z = i["quantization"]
            it.set_tensor(i["index"], (np.clip(np.round(x / s) + z, -128, 127) if s else x).astype(i["dtype"]))
        it.invoke()
        y = it.get_tensor(o["index"]).astype(np.float32)
        out.append((y - o["quantization"][1]) * o["quantization"][0] if o["quantization"][0] else y)
    return np.concatenate(out)


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _input_params(content: bytes, op_name: str) -> list[tuple[float, int]]:
    from edgeq.modelinfo import open_interpreter

    it = open_interpreter(content=content)
    det = {t["index"]: t for t in it.get_tensor_details()}
    return [det[op["inputs"][1]]["quantization"] for op in it._get_ops_details()  # noqa: SLF001
            if op["op_name"] == op_name]


def _raw_converter_int8(folder) -> bytes:
    """TFLiteConverter's own full-INT8 model (float I/O), before edgeq's pass."""
    from edgeq.data import load_dataset
    from edgeq.modes import IOType
    from edgeq.nativeio import quiet_native_output
    from edgeq.progress import Silent
    from edgeq.quantize import converter as qc
    from edgeq.sources import load_float_model

    representative_data = importlib.import_module("edgeq.convert").representative_data  # module, not facade
    with load_float_model(folder / "saved_model") as fm:
        calib = load_dataset(folder / "calib.npz", fm.inputs)
        settings = qc.ConverterSettings(mode=Mode.INT8, io=IOType.FLOAT32)
        c = qc.make_converter(fm.saved_model_dir, settings, representative_data(calib, Silent()))
        with quiet_native_output():
            return c.convert()


def _eval(folder) -> dict:
    return dict(np.load(folder / "eval.npz"))


def test_matmul_right_hand_inputs_get_zero_point_0(attention_like, tmp_path):
    rep = convert(attention_like / "saved_model", ConvertOptions(mode=Mode.INT8, calib=attention_like / "calib.npz"),
                  out=tmp_path / "m.tflite", eval_data=attention_like / "eval.npz")
    content = (tmp_path / "m.tflite").read_bytes()
    assert rep.model.fully_integer
    zps = [z for _, z in _input_params(content, "BATCH_MATMUL")]
    assert zps and all(z == 0 for z in zps)
    assert requantized_inputs(content) >= 1 and any("requantized" in n for n in rep.notes)
    data = _eval(attention_like)
    assert _rel(_outputs(content, data, True), _outputs(content, data, False)) < 0.02  # both kernels agree
    assert rep.accuracy.vs_float.cosine > 0.99
    assert rep.model.kernel_hazards == []


def test_inspect_names_the_hazards_of_a_model_converted_elsewhere(attention_like, mean_pooling, cli, tmp_path):
    for folder, op in ((attention_like, "BATCH_MATMUL"), (mean_pooling, "DIV")):
        raw = tmp_path / f"{op}.tflite"
        raw.write_bytes(_raw_converter_int8(folder))
        res = cli("inspect", str(raw))
        assert res.code == 0 and f"kernel hazard  {op} (" in res.out
        assert not inspect_tflite(content=fix_int8_kernels(raw.read_bytes())[0]).kernel_hazards


def test_canary_host_xnnpack_matmul_bug(attention_like):
    """The converter's own model (rhs zero point != 0) is wrong under the host runtime's XNNPACK
    (ai-edge-litert 2.1.2) and right in the builtin kernel. 2.3.0 fixed the delegate; if this starts
    failing, the host runtime was upgraded - the pass stays for apps that ship older runtimes."""
    raw = _raw_converter_int8(attention_like)
    assert any(z != 0 for _, z in _input_params(raw, "BATCH_MATMUL"))
    fixed, count = fix_int8_kernels(raw)
    assert count >= 1
    data = _eval(attention_like)
    assert _rel(_outputs(raw, data, True), _outputs(raw, data, False)) > 0.1  # the delegate's bug
    assert _rel(_outputs(fixed, data, True), _outputs(fixed, data, False)) < 0.02


def test_div_divisor_never_has_raw_byte_zero(mean_pooling, tmp_path):
    raw = _raw_converter_int8(mean_pooling)
    data = _eval(mean_pooling)
    assert [z for _, z in _input_params(raw, "DIV")] == [-128]
    with pytest.raises(RuntimeError, match="DIV"):  # the builtin kernel's raw-zero guard: count 8 -> byte 0
        _outputs(raw, data, False)
    rep = convert(mean_pooling / "saved_model", ConvertOptions(mode=Mode.INT8, calib=mean_pooling / "calib.npz"),
                  out=tmp_path / "m.tflite", eval_data=mean_pooling / "eval.npz")
    content = (tmp_path / "m.tflite").read_bytes()
    assert rep.model.fully_integer and [z for _, z in _input_params(content, "DIV")] == [1]
    builtin, xnn = _outputs(content, data, False), _outputs(content, data, True)
    expected = (data["x"] * data["mask"][..., None]).sum(1) / np.maximum(data["mask"].sum(1, keepdims=True), 1)
    assert _rel(builtin, expected) < 0.05 and _rel(xnn, expected) < 0.05
