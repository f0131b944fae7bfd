"""QUANTIZE(CAST(integer * 0 -> float)) written as an integer constant zero: silero-vad's last float tensor.

silero-vad keeps its ``sr`` input in the graph by adding ``float(sr * 0)`` to the new state. The int8 model
then computes CAST(int64 -> int32), MUL(int32, 0), CAST(int32 -> float32), QUANTIZE and ADD: a float tensor
(so not integer-only) and four ops XNNPACK leaves on the CPU, among them the ADD, whose zero operand was
calibrated to a scale of ~1e-8. An integer times an integer constant 0 is exactly 0, so the QUANTIZE
output is its zero point whatever the input: it becomes a constant holding the zero point (with the scale
of the other operand when its one reader is an ADD or SUB, so the kernel sees equal scales), and the
integer ops that only fed it are dropped. The model input stays, unread, so the signature is unchanged.
"""
from __future__ import annotations

import copy

import numpy as np

from edgeq.tflite import flatbuffer

_INT = {2: np.int32, 4: np.int64, 7: np.int16, 9: np.int8, 3: np.uint8}  # TensorType -> numpy integer dtype
_QUANT = {9: np.int8, 7: np.int16}


def _int_zero_const(model, sg, index: int) -> bool:
    t = sg.tensors[index]
    raw = flatbuffer.raw_data(model, t) if index >= 0 else None
    return raw is not None and t.type in _INT and not np.frombuffer(raw.tobytes(), _INT[t.type]).any()


def zero_integer_casts(content: bytes) -> tuple[bytes, int]:
    """Rewrite every QUANTIZE of CAST(MUL(integer, integer constant 0)); returns (model, QUANTIZEs replaced)."""
    sc = flatbuffer.schema()
    model = flatbuffer.load(content)
    names = flatbuffer.op_names(model)
    if not {"QUANTIZE", "CAST", "MUL"} <= set(names):
        return content, 0
    done = 0
    for sg in model.subgraphs:
        producer = {int(o): k for k, op in enumerate(sg.operators) for o in op.outputs}
        reads = flatbuffer.readers(sg)
        outputs = {int(i) for i in sg.outputs}
        drop = set()
        for k, op in enumerate(sg.operators):
            if names[op.opcodeIndex] != "QUANTIZE" or len(op.inputs) != 1:
                continue
            q = int(op.outputs[0])
            cast = producer.get(int(op.inputs[0]))
            if cast is None or names[sg.operators[cast].opcodeIndex] != "CAST" or sg.tensors[q].type not in _QUANT:
                continue
            mul = producer.get(int(sg.operators[cast].inputs[0]))
            if (mul is None or names[sg.operators[mul].opcodeIndex] != "MUL"
                    or sg.tensors[int(sg.operators[mul].outputs[0])].type not in _INT
                    or not any(_int_zero_const(model, sg, int(i)) for i in sg.operators[mul].inputs)):
                continue
            t = sg.tensors[q]
            quant = copy.deepcopy(t.quantization)
            users = reads.get(q, [])
            if len(users) == 1 and names[sg.operators[users[0]].opcodeIndex] in ("ADD", "SUB"):
                other = [int(i) for i in sg.operators[users[0]].inputs if int(i) != q]
                if len(other) == 1 and sg.tensors[other[0]].type == t.type:
                    quant = copy.deepcopy(sg.tensors[other[0]].quantization)
            zp = int(quant.zeroPoint[0]) if quant.zeroPoint is not None and len(quant.zeroPoint) else 0
            buf = sc.BufferT()
            shape = [int(d) for d in t.shape] if t.shape is not None else []
            buf.data = np.frombuffer(np.full(shape, zp, _QUANT[t.type]).tobytes(), np.uint8)
            model.buffers.append(buf)
            t.buffer, t.quantization, t.shapeSignature = len(model.buffers) - 1, quant, None
            drop.add(k)
            done += 1
        if not drop:
            continue
        ops = [op for k, op in enumerate(sg.operators) if k not in drop]
        while True:  # integer ops whose results nobody reads any more
            read = {int(i) for op in ops for i in op.inputs if int(i) >= 0} | outputs
            dead = [op for op in ops if names[op.opcodeIndex] in ("CAST", "MUL")
                    and not any(int(o) in read for o in op.outputs)]
            if not dead:
                break
            ops = [op for op in ops if all(op is not d for d in dead)]
        sg.operators = ops
    return (flatbuffer.dump(model), done) if done else (content, 0)
