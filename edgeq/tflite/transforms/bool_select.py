"""CAST(bool -> float32) then QUANTIZE written as SELECT_V2(mask, q(1), q(0)): the last float op of an encoder.

A BERT-style encoder turns its attention mask into an additive bias through a boolean: onnx2tf's graph has
LOGICAL_AND -> CAST(float32) -> QUANTIZE(int8). That CAST is the one float op left in an otherwise integer
model, and an NPU that rejects float rejects the model for it. Selecting between the two quantized values
of 1.0 and 0.0 gives the same int8 tensor with integer ops only.
"""
from __future__ import annotations

import numpy as np

from edgeq.tflite import flatbuffer

_QUANT_TYPES = {9: np.int8, 7: np.int16}  # TensorType INT8, INT16
_BOOL = 6


def bool_casts_as_select(content: bytes) -> tuple[bytes, int]:
    """Rewrite every bool->float CAST whose only readers are QUANTIZE ops; returns (model, casts removed)."""
    sc = flatbuffer.schema()
    loaded = flatbuffer.load_with_ops(content, "CAST", "QUANTIZE")
    if loaded is None:
        return content, 0
    model, names = loaded
    done = 0
    for sg, reads, outputs in flatbuffer.subgraphs_with_readers(model):
        drop, replace = set(), {}
        for k, op in enumerate(sg.operators):
            if names[op.opcodeIndex] != "CAST" or len(op.inputs) != 1:
                continue
            src, mid = int(op.inputs[0]), int(op.outputs[0])
            users = reads.get(mid, [])
            if (sg.tensors[src].type != _BOOL or sg.tensors[mid].type != flatbuffer.FLOAT32 or mid in outputs
                    or not users or any(names[sg.operators[u].opcodeIndex] != "QUANTIZE" for u in users)
                    or any(sg.tensors[int(sg.operators[u].outputs[0])].type not in _QUANT_TYPES for u in users)):
                continue
            for u in users:
                out = int(sg.operators[u].outputs[0])
                t = sg.tensors[out]
                dtype = _QUANT_TYPES[t.type]
                scale, zp = float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0])
                info = np.iinfo(dtype)
                one = _scalar(model, sg, out, np.clip(round(1.0 / scale) + zp, info.min, info.max), dtype, "/one")
                zero = _scalar(model, sg, out, np.clip(zp, info.min, info.max), dtype, "/zero")
                new = sc.OperatorT()
                new.opcodeIndex = flatbuffer.opcode_index(model, sc.BuiltinOperator.SELECT_V2)
                new.inputs, new.outputs = np.array([src, one, zero], np.int32), np.array([out], np.int32)
                replace[u] = new
            drop.add(k)
            done += 1
        sg.operators = [replace.get(k, op) for k, op in enumerate(sg.operators) if k not in drop]
    return (flatbuffer.dump(model), done) if done else (content, 0)


def _scalar(model, sg, like: int, value, dtype, suffix: str) -> int:
    """A constant scalar with the quantization of tensor ``like`` (SELECT_V2 keeps its operands' scale)."""
    import copy

    sc = flatbuffer.schema()
    buf = sc.BufferT()
    buf.data = np.frombuffer(np.asarray(value, dtype).tobytes(), np.uint8)
    model.buffers.append(buf)
    t = sc.TensorT()
    t.shape, t.type, t.buffer = np.array([], np.int32), sg.tensors[like].type, len(model.buffers) - 1
    t.name = flatbuffer.tensor_name(sg, like) + suffix
    t.quantization = copy.deepcopy(sg.tensors[like].quantization)
    sg.tensors.append(t)
    return len(sg.tensors) - 1
