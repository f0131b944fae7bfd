"""Which ops XNNPACK (LiteRT's default CPU delegate) takes, and why it leaves the others on the CPU.

A partly delegated graph runs its leftovers on LiteRT's reference kernels and pays a copy at every
partition border: the usual silent slowdown. XNNPACK does not say why it refused a node (its messages are
compiled out of the node check), so the reasons below restate the delegate's checks: by op and tensor type,
and, for the ops whose int8 kernels have limits, computed from the node's own scales and constants.

Source of the checks: LiteRT v2.1.2 (the tag of the ai-edge-litert 2.1.2 wheel),
tflite/delegates/xnnpack/xnnpack_delegate.cc, ``Subgraph::VisitNode`` and the ``Visit*Node`` it calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# op -> why XNNPACK leaves it (checked against ai-edge-litert's delegate on x86_64 and aarch64)
_DYNAMIC_SHAPE = "dynamic-shape plumbing of a dynamic batch; convert with a fixed batch (--batch 1, the default)"
REASONS = {
    "SHAPE": _DYNAMIC_SHAPE,
    "STRIDED_SLICE": "strided slices with dynamic or non-unit strides; from a dynamic batch: --batch 1",
    "PACK": _DYNAMIC_SHAPE,
    "FILL": _DYNAMIC_SHAPE,
    "GATHER": "no XNNPACK kernel (embedding lookups stay on the CPU)",
    "CAST": "no XNNPACK kernel for this type conversion",
    "RESHAPE": "a reshape whose new shape is computed at run time (dynamic batch: --batch 1)",
    "SLICE": "a slice 'to the end' (size -1) of a dynamic shape (edgeq writes static ones with explicit sizes)",
    "RESIZE_NEAREST_NEIGHBOR": "no XNNPACK kernel; edgeq rewrites integer-factor upsampling without align_corners "
                               "as concatenation + reshape, so this one is another factor or aligns corners",
    "RELU_0_TO_1": "no XNNPACK kernel in any type (float models get MAXIMUM/MINIMUM instead, and those are "
                   "float-only in XNNPACK)",
}
# the ops VisitNode has a case for; any other op is never delegated, whatever its types
_VISITED = set("""ABS CEIL COS DEQUANTIZE ELU EXP FLOOR GELU HARD_SWISH LEAKY_RELU LOGISTIC NEG QUANTIZE RELU RELU6
    RELU_N1_TO_1 ROUND RSQRT SIN SQRT SQUARE TANH ADD DIV MAXIMUM MINIMUM MUL PRELU SQUARED_DIFFERENCE SUB
    ASSIGN_VARIABLE AVERAGE_POOL_2D BATCH_MATMUL CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE EXPAND_DIMS
    FULLY_CONNECTED MAX_POOL_2D REDUCE_MIN REDUCE_MAX SUM MEAN PAD READ_VARIABLE RESHAPE RESIZE_BILINEAR SLICE
    SOFTMAX SPACE_TO_DEPTH SPLIT STRIDED_SLICE TRANSPOSE TRANSPOSE_CONV VAR_HANDLE STABLEHLO_COMPOSITE""".split())
# ops whose type check takes float tensors only (CheckTensorFloat32Type / CheckTensorFloatType)
_FLOAT_ONLY = set("""AVERAGE_POOL_2D DIV MAXIMUM MINIMUM PRELU SQUARED_DIFFERENCE SOFTMAX ABS CEIL COS EXP FLOOR
    GELU HARD_SWISH NEG RELU RELU6 RELU_N1_TO_1 ROUND RSQRT SIN SQRT SQUARE""".split())
_QUANTIZED = ("int8", "uint8")


def reason(op: str, dtype: str = "") -> str:
    """Why XNNPACK leaves ``op`` (with output type ``dtype``) on the CPU, from the op and type alone."""
    if op in _FLOAT_ONLY and dtype in _QUANTIZED:
        return f"no {dtype} {op} kernel (XNNPACK's delegate takes {op} in float only)"
    # a bool/int16/int64 tensor is refused by its type whatever the op's other limits; int32 ones are mostly
    # shape plumbing (SHAPE -> STRIDED_SLICE -> PACK), which the op's own reason explains better
    if op in REASONS and not (dtype in ("bool", "int16", "int64") and op in _VISITED):
        return REASONS[op]
    if dtype in ("bool", "int16", "int32", "int64") and op in _VISITED:
        return f"no {dtype} {op} kernel (XNNPACK's delegate takes float and 8-bit quantized tensors)"
    if op not in _VISITED:
        return f"no XNNPACK kernel for {op} (in any type)"
    return f"XNNPACK refuses this {op} on {dtype or 'these'} tensors (a shape or parameter limit)"


def _scale(t: dict) -> float | None:
    s = t["quantization_parameters"]["scales"]
    return float(s[0]) if len(s) == 1 else None


def _out_of(value: float, lo: float, hi: float, hi_open: bool, what: str, limits: str):
    if lo <= value and (value < hi if hi_open else value <= hi):
        return None
    return f"{what} {{}} {'below' if value < lo else 'above'} XNNPACK's {limits}", value


def node_reason(op: str, ins: list[dict], outs: list[dict], const) -> tuple[str, float | None] | None:
    """The delegate's parameter check that refuses this node, from its tensors: ``ins``/``outs`` are the
    interpreter's tensor details, ``const(k)`` input k's constant value or None. Returns a text with a ``{}``
    for the offending value, and the value; None when the refusal is by op or type alone (``reason``)."""
    if op == "SLICE" and len(ins) > 2 and (size := const(2)) is not None and (np.asarray(size) <= 0).any():
        # VisitSliceNode: every size must be positive; "to the end" (-1) is refused, not resolved
        return ("a size of -1 ('to the end'): XNNPACK needs explicit positive sizes (edgeq's explicit-size "
                "rewrite did not apply or was not kept)", None)
    if not ins or not outs or not all(t is not None for t in ins):
        return None
    types = [np.dtype(t["dtype"]).name for t in ins + outs[:1]]
    scales = [_scale(t) for t in ins + outs[:1]]
    if types[0] not in _QUANTIZED or None in scales:
        return None  # float, or per-channel activations: not a limit edgeq restates
    out = scales[-1]
    if op in ("ADD", "SUB") and len(ins) == 2:
        if len(set(types)) > 1:
            return f"mixed tensor types {types}: XNNPACK wants inputs and output of one type", None
        # VisitBinaryNode -> CheckTensorsInputOutputScale: each input_scale / output_scale in [2^-10, 2^8)
        return (_out_of(scales[0] / out, 2.0 ** -10, 2.0 ** 8, True, "input 1/output scale ratio",
                        "[2^-10, 2^8) for int8 ADD/SUB")
                or _out_of(scales[1] / out, 2.0 ** -10, 2.0 ** 8, True, "input 2/output scale ratio",
                           "[2^-10, 2^8) for int8 ADD/SUB"))
    if op == "MUL" and len(ins) == 2:
        # CheckTensorsInputProductOutputScale: input1_scale * input2_scale / output_scale in [2^-16, 2^8)
        return _out_of(scales[0] * scales[1] / out, 2.0 ** -16, 2.0 ** 8, True, "input-product/output scale ratio",
                       "[2^-16, 2^8) for int8 MUL")
    if op == "QUANTIZE":
        if types[0] != types[-1]:
            return f"{types[0]} -> {types[-1]}: XNNPACK requantizes only within one type", None
        # VisitUnaryNode, QUANTIZE of a quantized input: input_scale / output_scale in [1/256, 128]
        return _out_of(scales[0] / out, 1 / 256, 128, False, "input/output scale ratio",
                       "[1/256, 128] for an int8 requantization")
    return None


@dataclass(frozen=True)
class Coverage:
    """XNNPACK's share of one model's graph."""

    delegated: int
    total: int
    partitions: int
    left: dict[str, int] = field(default_factory=dict)  # "OP dtype" -> nodes left on the CPU
    why: dict[str, str] = field(default_factory=dict)  # "OP dtype" -> reason computed from those nodes' params

    @property
    def whole(self) -> bool:
        return self.total > 0 and self.delegated == self.total

    def reasons(self) -> list[str]:
        return [f"{key} x{n}: {self.why.get(key) or reason(*key.split(' ', 1))}" for key, n in sorted(self.left.items())]

    @property
    def summary(self) -> str:
        head = f"XNNPACK takes {self.delegated} of {self.total} nodes in {self.partitions} partition(s)"
        return head if self.whole else f"{head}; on the CPU: " + "; ".join(self.reasons())

    def to_dict(self) -> dict:
        return {"delegated": self.delegated, "total": self.total, "partitions": self.partitions,
                "whole": self.whole, "left_on_cpu": dict(self.left), "summary": self.summary}


def _grouped(key: str, found: list) -> str:
    """One line for the nodes of one "OP dtype" group: each distinct check, with the range of its values;
    nodes with no computed reason get the op/type one."""
    texts: dict[str, list[float]] = {}
    for f in found:
        text, value = f if f is not None else (reason(*key.split(" ", 1)), None)
        texts.setdefault(text, []).extend([] if value is None else [value])
    parts = []
    for text, values in texts.items():
        lo, hi = (f"{min(values):.2g}", f"{max(values):.2g}") if values else ("", "")
        shown = lo if lo == hi else f"{lo} to {hi}"
        parts.append(text.replace("{}", shown) if "{}" in text else text)
    return "; ".join(parts)


def coverage(content: bytes) -> Coverage:
    """Allocate ``content`` with the XNNPACK delegate and count the nodes it replaced."""
    from edgeq.bench.host_worker import delegated_nodes, delegation
    from edgeq.modelinfo import open_interpreter
    from edgeq.nativeio import quiet_native_output

    interp = open_interpreter(content=content)
    with quiet_native_output():
        interp.allocate_tensors()
    ops = interp._get_ops_details()  # noqa: SLF001 - the node list after delegation; no public API
    details = {t["index"]: t for t in interp.get_tensor_details()}
    dtype = {i: np.dtype(t["dtype"]).name for i, t in details.items()}
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    found = delegation(ops, "XNNPACK")
    taken = delegated_nodes(ops) if found else set()
    produced = {int(t) for o in originals for t in o["outputs"]} | {d["index"] for d in interp.get_input_details()}
    left: dict[str, int] = {}
    checks: dict[str, list] = {}
    for o in originals:
        if o["index"] not in taken:
            key = f"{o['op_name']} {dtype.get(int(o['outputs'][0]), '?') if len(o['outputs']) else '?'}"
            left[key] = left.get(key, 0) + 1
            checks.setdefault(key, []).append(_node_check(interp, details, o, produced))
    why = {k: _grouped(k, v) for k, v in checks.items() if any(f is not None for f in v)}
    return Coverage(len(taken), len(originals), found[0].partitions or 0 if found else 0, left, why)


def _node_check(interp, details: dict, o: dict, produced: set[int]):
    def const(k: int):
        i = int(o["inputs"][k]) if k < len(o["inputs"]) else -1
        return None if i < 0 or i in produced else interp.get_tensor(i)  # neither computed nor fed: a constant

    ins = [details.get(int(i)) for i in o["inputs"]]
    outs = [details.get(int(i)) for i in o["outputs"]]
    try:
        return node_reason(o["op_name"], ins, outs, const)
    except Exception:  # noqa: BLE001 - an odd node gets the op/type reason, never a failed report
        return None
