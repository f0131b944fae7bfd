"""Multiply-accumulates and precision of every op in a .tflite, read through the LiteRT interpreter.

"How much of the compute runs INT8" is counted in MACs, not ops: a mixed model that keeps the tiny
classifier in float but runs every big convolution in INT8 is nearly as fast as full INT8, while
one that keeps a wide 1x1 convolution in float is not. MACs are per sample (batch 1).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from edgeq.modelinfo import open_interpreter
from edgeq.quantize.int16_fallback import BORDER, SUFFIX_16

# Ops the converter inserts at precision boundaries: they move data, they do not compute the model. The int16
# fallback's int8 -> int16 widening (CAST + ADD, outputs named ...BORDER) counts as such a boundary too.
BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}
FLOAT_KINDS = {"float32", "float16", "float64", "bfloat16"}


class Precision(str, Enum):
    """What an op computes in: integer kernels, float with half-size weights, or plain float."""

    INT8 = "int8"
    INT16 = "int16"
    FP16 = "fp16"  # float16 weights dequantized to float32 once at load; float32 compute
    FP32 = "fp32"


@dataclass(frozen=True)
class OpRecord:
    """One compute op: its type, output tensor name (the converter's layer location), MACs, precision."""

    index: int
    op: str
    name: str
    macs: int
    precision: Precision


def _per_sample(shape) -> int:
    shape = [int(s) for s in shape]
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))


def op_macs(op: str, in_shapes: list, out_shape) -> int:
    """MACs of one op for a batch of one; 0 for ops without multiply-accumulate loops (ADD, pooling...)."""
    if not in_shapes or len(in_shapes) < 2 or out_shape is None:
        return 0
    out = _per_sample(out_shape)
    w = [int(s) for s in in_shapes[1]]
    if op == "CONV_2D" and len(w) == 4:  # filter [out_ch, kh, kw, in_ch]
        return out * w[1] * w[2] * w[3]
    if op == "DEPTHWISE_CONV_2D" and len(w) == 4:  # filter [1, kh, kw, out_ch]
        return out * w[1] * w[2]
    if op == "FULLY_CONNECTED" and len(w) == 2:  # filter [units, in]
        return out * w[1]
    if op == "BATCH_MATMUL":
        a = [int(s) for s in in_shapes[0]]
        return out * (a[-1] if a else 0)
    if op == "TRANSPOSE_CONV" and len(in_shapes) > 2:  # inputs: output_shape, filter, input
        f = [int(s) for s in in_shapes[1]]
        return _per_sample(in_shapes[2]) * f[0] * f[1] * f[2] if len(f) == 4 else 0
    if op == "CONV_3D" and len(w) == 5:  # filter [kd, kh, kw, in_ch, out_ch]
        return out * w[0] * w[1] * w[2] * w[3]
    return 0


def op_records(path: Path | None = None, content: bytes | None = None) -> list[OpRecord]:
    """Every compute op (QUANTIZE/DEQUANTIZE boundaries excluded) with its MACs and precision."""
    interp = open_interpreter(path, content)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op list the Python API offers
    producer = {o: op for op in ops for o in op["outputs"]}
    dtype = {i: np.dtype(t["dtype"]).name for i, t in tensors.items()}
    records = []
    for op in ops:
        name = op["op_name"]
        out_name = tensors[op["outputs"][0]]["name"] if len(op["outputs"]) else "?"
        if name in BOUNDARY_OPS or out_name.endswith(BORDER):  # the int16 fallback's CAST + ADD widening
            continue
        ins = [i for i in op["inputs"] if i >= 0]
        outs = list(op["outputs"])
        shapes = [tensors[i]["shape"] for i in ins]
        macs = op_macs(name, shapes, tensors[outs[0]]["shape"] if outs else None)
        # An op moved to int16 writes '<layer>_edgeq_i16': report it under the layer's name.
        records.append(OpRecord(op["index"], name, out_name.removesuffix(SUFFIX_16), macs,
                                _precision(ins, outs, dtype, producer)))
    return records


def _precision(ins, outs, dtype, producer) -> Precision:
    kinds = {dtype[i] for i in ins + outs}
    if not kinds & FLOAT_KINDS:
        return Precision.INT16 if "int16" in kinds else Precision.INT8
    for i in ins:  # float op: did any weight come from a float16 constant through DEQUANTIZE?
        src = producer.get(i)
        if src is not None and src["op_name"] == "DEQUANTIZE" and any(dtype[j] == "float16" for j in src["inputs"]):
            return Precision.FP16
        if dtype[i] == "float16":
            return Precision.FP16
    return Precision.FP32


@dataclass(frozen=True)
class ComputeShare:
    """Share of compute ops and of MACs per precision in one model."""

    ops: int
    macs: int
    ops_by_precision: dict
    macs_by_precision: dict

    @property
    def int8_ops_share(self) -> float:
        return self.ops_by_precision.get("int8", 0) / self.ops if self.ops else 0.0

    @property
    def int8_macs_share(self) -> float:
        return self.macs_by_precision.get("int8", 0) / self.macs if self.macs else 0.0

    def to_dict(self) -> dict:
        return {"ops": self.ops, "macs": self.macs, "ops_by_precision": self.ops_by_precision,
                "macs_by_precision": self.macs_by_precision, "int8_ops_share": round(self.int8_ops_share, 4),
                "int8_macs_share": round(self.int8_macs_share, 4)}


def compute_share(records: list[OpRecord]) -> ComputeShare:
    """Count ops and MACs by precision."""
    ops: dict[str, int] = {}
    macs: dict[str, int] = {}
    for r in records:
        ops[r.precision.value] = ops.get(r.precision.value, 0) + 1
        macs[r.precision.value] = macs.get(r.precision.value, 0) + r.macs
    return ComputeShare(ops=len(records), macs=sum(r.macs for r in records), ops_by_precision=ops,
                        macs_by_precision=macs)
