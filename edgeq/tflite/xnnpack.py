"""Which ops XNNPACK (LiteRT's default CPU delegate) takes, and why it leaves the others on the CPU.

A partly delegated graph runs its leftovers on LiteRT's reference kernels and pays a copy at every
partition border: the usual silent slowdown. XNNPACK does not say why it refused a node; the reasons
below are the known ones, by op and tensor type, so a report can say what to do.
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
}
# (op, output dtype) -> why: kernels XNNPACK has in float but not in integer form
TYPED_REASONS = {
    ("PRELU", "int8"): "XNNPACK has no int8 PReLU kernel (float PReLU is delegated)",
    ("SOFTMAX", "int8"): "XNNPACK has no int8 SOFTMAX kernel (float SOFTMAX is delegated)",
    ("RELU_0_TO_1", "int8"): "XNNPACK has no int8 kernel for RELU_0_TO_1 (HardSigmoid's clamp)",
    ("LOGISTIC", "int8"): "XNNPACK has no int8 LOGISTIC (sigmoid) kernel",
    ("TANH", "int8"): "XNNPACK has no int8 TANH kernel",
}


def reason(op: str, dtype: str = "") -> str:
    """Why XNNPACK leaves ``op`` (with output type ``dtype``) on the CPU, as far as it is known."""
    return TYPED_REASONS.get((op, dtype)) or REASONS.get(op) or f"no XNNPACK kernel for {op} on {dtype or 'these'} tensors"


@dataclass(frozen=True)
class Coverage:
    """XNNPACK's share of one model's graph."""

    delegated: int
    total: int
    partitions: int
    left: dict[str, int] = field(default_factory=dict)  # "OP dtype" -> nodes left on the CPU

    @property
    def whole(self) -> bool:
        return self.total > 0 and self.delegated == self.total

    def reasons(self) -> list[str]:
        return [f"{key} x{n}: {reason(*key.split(' ', 1))}" for key, n in sorted(self.left.items())]

    @property
    def summary(self) -> str:
        head = f"XNNPACK takes {self.delegated} of {self.total} nodes in {self.partitions} partition(s)"
        return head if self.whole else f"{head}; on the CPU: " + "; ".join(self.reasons())

    def to_dict(self) -> dict:
        return {"delegated": self.delegated, "total": self.total, "partitions": self.partitions,
                "whole": self.whole, "left_on_cpu": dict(self.left), "summary": self.summary}


def coverage(content: bytes) -> Coverage:
    """Allocate ``content`` with the XNNPACK delegate and count the nodes it replaced."""
    from edgeq.bench.host_worker import delegated_nodes, delegation
    from edgeq.modelinfo import open_interpreter
    from edgeq.nativeio import quiet_native_output

    interp = open_interpreter(content=content)
    with quiet_native_output():
        interp.allocate_tensors()
    ops = interp._get_ops_details()  # noqa: SLF001 - the node list after delegation; no public API
    dtype = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    found = delegation(ops, "XNNPACK")
    taken = delegated_nodes(ops) if found else set()
    left: dict[str, int] = {}
    for o in originals:
        if o["index"] not in taken:
            key = f"{o['op_name']} {dtype.get(int(o['outputs'][0]), '?') if len(o['outputs']) else '?'}"
            left[key] = left.get(key, 0) + 1
    return Coverage(len(taken), len(originals), found[0].partitions or 0 if found else 0, left)

