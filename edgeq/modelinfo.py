"""What is inside a .tflite file: I/O quantization, ops, tensor dtypes, per-channel weights, size.

Read through the LiteRT interpreter itself (not a separate flatbuffer parser), so what edgeq reports is
what the runtime will run.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgeq.errors import ModelLoadError, first_line

# Ops whose input 1 is a weight (filter) tensor.
WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
FLOAT_DTYPES = {"float32", "float16", "float64", "bfloat16"}


@dataclass(frozen=True)
class IOTensor:
    """A model input or output: what a caller must feed or read."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float | None = None  # None when not quantized
    zero_point: int | None = None


@dataclass(frozen=True)
class WeightInfo:
    """A constant tensor feeding a conv/dense/matmul op."""

    name: str
    op: str
    dtype: str
    shape: tuple[int, ...]
    bytes: int
    per_channel: bool
    channels: int  # number of scales (1 for per-tensor, 0 for float)


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    float_io: bool  # reads or writes a float activation


@dataclass
class ModelInfo:
    """Everything ``edgeq inspect`` shows about one .tflite model."""

    path: str
    size_bytes: int
    inputs: list[IOTensor]
    outputs: list[IOTensor]
    op_counts: dict[str, int]
    tensors_by_dtype: dict[str, int]
    weights: list[WeightInfo]
    size_by_group: dict[str, int]
    # "OP (output tensor name)" for ops computing in float; QUANTIZE of a float graph input and DEQUANTIZE to a
    # float graph output are I/O conversions, not float compute, and are not listed.
    float_ops: list[str] = field(default_factory=list)
    # int8 ops whose input hits a LiteRT kernel bug (edgeq.quantize.kernel_workarounds): "OP (tensor): why"
    kernel_hazards: list[str] = field(default_factory=list)
    xnnpack: dict | None = None  # edgeq.tflite.xnnpack.Coverage.to_dict(), when asked for

    @property
    def fully_integer(self) -> bool:
        """True when no tensor (activation, weight or I/O) is float: every op runs an integer kernel."""
        return not any(d in FLOAT_DTYPES for d in self.tensors_by_dtype)

    @property
    def all_weights_per_channel(self) -> bool:
        """True when every multi-channel conv/dense weight has one scale per output channel."""
        quantized = [w for w in self.weights if w.channels > 0 and w.op != "BATCH_MATMUL"]
        return bool(quantized) and all(w.per_channel or w.shape[_axis(w)] == 1 for w in quantized)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fully_integer"] = self.fully_integer
        d["all_weights_per_channel"] = self.all_weights_per_channel
        d["op_count"] = sum(self.op_counts.values())
        return d


def _integer_input_casts(ops: list[dict], dtype_of: dict[int, str]) -> set[int]:
    """Outputs of CAST(integer -> float) ops read only by QUANTIZE: integer data (token ids, an attention
    mask) entering the int8 graph. Like QUANTIZE of a float graph input, a conversion, not float compute."""
    readers: dict[int, list[str]] = {}
    for op in ops:
        for i in op["inputs"]:
            readers.setdefault(i, []).append(op["op_name"])
    found = set()
    for op in ops:
        ins = [i for i in op["inputs"] if i >= 0]
        if op["op_name"] != "CAST" or len(ins) != 1 or len(op["outputs"]) != 1:
            continue
        src, out = np.dtype(dtype_of[ins[0]]), op["outputs"][0]
        if src.kind in "iub" and dtype_of.get(out) in FLOAT_DTYPES and readers.get(out) \
                and all(r == "QUANTIZE" for r in readers[out]):
            found.add(out)
    return found


def _axis(w: WeightInfo) -> int:
    return 3 if w.op == "DEPTHWISE_CONV_2D" else 0


def open_interpreter(path: Path | None = None, content: bytes | None = None, num_threads: int | None = None):
    """An ai-edge-litert Interpreter, with a one-line ModelLoadError for files that are not sound TFLite.

    The model is checked (edgeq.tflite.verify) and then always loaded from memory: the runtime verifies
    buffers it is given but not files it maps, and a corrupt mapped file crashes the process."""
    from edgeq.extras import require

    require("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.tflite.verify import read_model, verify_tflite

    where = str(path) if path is not None else "<model bytes>"
    if content is None:
        content = read_model(Path(path))
    verify_tflite(path, content)
    from edgeq.nativeio import quiet_native_output

    try:
        with quiet_native_output():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            return Interpreter(model_content=bytes(content), num_threads=num_threads)
    except Exception as exc:  # the runtime raises ValueError/RuntimeError with multi-line text
        raise ModelLoadError(f"{where}: LiteRT cannot load it ({first_line(exc)[:160]}); the file may be truncated "
                             "or from a newer converter") from exc


def _io(d: dict) -> IOTensor:
    scale, zp = d["quantization"]
    quantized = scale != 0.0
    return IOTensor(name=d["name"], dtype=np.dtype(d["dtype"]).name, shape=tuple(int(s) for s in d["shape"]),
                    scale=float(scale) if quantized else None, zero_point=int(zp) if quantized else None)


def inspect_tflite(path: Path | None = None, content: bytes | None = None, xnnpack: bool = False) -> ModelInfo:
    """Describe a .tflite model given as a path or as bytes; ``xnnpack`` adds which nodes XNNPACK takes
    (it allocates the model, so it costs a little more)."""
    interp = open_interpreter(path, content)
    size = len(content) if content is not None else Path(path).stat().st_size
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op list the Python API offers
    produced = {o for op in ops for o in op["outputs"]}
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    graph_outputs = {d["index"] for d in interp.get_output_details()}
    dtype_of = {i: np.dtype(t["dtype"]).name for i, t in tensors.items()}
    constant = {i for i in tensors if i not in produced and i not in graph_inputs}
    # Tensors no op reads or writes (left behind by a rewrite) are not part of the model's compute.
    used = {i for op in ops for i in (*op["inputs"], *op["outputs"]) if i >= 0} | graph_inputs | graph_outputs

    weights: list[WeightInfo] = []
    const_bytes: Counter[str] = Counter()
    for i in constant:
        t = tensors[i]
        const_bytes[dtype_of[i]] += int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize
    op_infos: list[OpInfo] = []
    float_ops: list[str] = []
    int_casts = _integer_input_casts(ops, dtype_of)
    for op in ops:
        ins = tuple(i for i in op["inputs"] if i >= 0)
        outs = tuple(op["outputs"])
        acts = [i for i in ins if i not in constant] + list(outs)
        float_io = any(dtype_of.get(i) in FLOAT_DTYPES for i in acts)
        op_infos.append(OpInfo(op["index"], op["op_name"], ins, outs, float_io))
        io_conversion = ((op["op_name"] == "QUANTIZE" and set(ins) <= graph_inputs | int_casts)
                         or (op["op_name"] == "DEQUANTIZE" and set(outs) <= graph_outputs)
                         or (op["op_name"] == "CAST" and set(outs) <= int_casts))
        if float_io and not io_conversion:
            float_ops.append(f"{op['op_name']} ({tensors[outs[0]]['name'] if outs else '?'})")
        if op["op_name"] in WEIGHTED_OPS and len(ins) > 1 and ins[1] in constant:
            t = tensors[ins[1]]
            scales = t["quantization_parameters"]["scales"]
            weights.append(WeightInfo(
                name=t["name"], op=op["op_name"], dtype=dtype_of[ins[1]], shape=tuple(int(s) for s in t["shape"]),
                bytes=int(np.prod(t["shape"])) * np.dtype(t["dtype"]).itemsize,
                per_channel=len(scales) > 1, channels=len(scales)))
    groups = {f"constants {k}": v for k, v in sorted(const_bytes.items())}
    groups["graph and metadata"] = max(0, size - sum(const_bytes.values()))
    delegated = None
    if xnnpack:
        from edgeq.tflite.xnnpack import coverage

        delegated = coverage(content if content is not None else Path(path).read_bytes()).to_dict()
    return ModelInfo(
        path=str(path) if path is not None else "<bytes>", size_bytes=size, xnnpack=delegated,
        inputs=[_io(d) for d in interp.get_input_details()], outputs=[_io(d) for d in interp.get_output_details()],
        op_counts=dict(Counter(o.op for o in op_infos).most_common()),
        tensors_by_dtype=dict(Counter(dtype_of[i] for i in used).most_common()),
        weights=weights, size_by_group=groups, float_ops=float_ops,
        kernel_hazards=_kernel_hazards(ops, tensors, constant))


def _kernel_hazards(ops, tensors: dict, constant: set) -> list[str]:
    """Ops of models converted elsewhere that edgeq's own output would have requantized."""
    from edgeq.quantize.kernel_workarounds import RULES

    rules = {r.opcode: r for r in RULES}
    out = []
    for op in ops:
        rule = rules.get(op["op_name"])
        if rule is None or len(op["inputs"]) <= rule.slot:
            continue
        t = tensors[op["inputs"][rule.slot]]
        scale, zp = t["quantization"]
        if op["inputs"][rule.slot] not in constant and t["dtype"] == np.int8 and scale and rule.params(scale, zp):
            out.append(f"{op['op_name']} ({tensors[op['outputs'][0]]['name']}): input {rule.slot} zero point {zp}, "
                       + rule.why)
    return out
