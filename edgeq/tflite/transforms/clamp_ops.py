"""RELU_0_TO_1 as MAXIMUM(x, 0) then MINIMUM(., 1): the same numbers, and ops XNNPACK delegates.

onnx2tf lowers HardSigmoid (MobileNetV3's squeeze-excite gate, PaddleOCR's backbones) to RELU_0_TO_1,
which XNNPACK has no kernel for: each one splits the graph into another partition, with a copy at every
border. On float tensors max/min with constants is bit-exact, so the rewrite is applied to float
models only (quantized RELU_0_TO_1 keeps its own integer kernel).
"""
from __future__ import annotations

import numpy as np

from edgeq.tflite import flatbuffer


def relu_0_to_1_as_min_max(content: bytes) -> tuple[bytes, int]:
    """Rewrite every float32 RELU_0_TO_1; returns (model, number rewritten)."""
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    model = flatbuffer.load(content)
    names = flatbuffer.op_names(model)
    if "RELU_0_TO_1" not in names:
        return content, 0
    done = 0
    for sg in model.subgraphs:
        new_ops = []
        for op in sg.operators:
            x = int(op.inputs[0]) if len(op.inputs) else -1
            if names[op.opcodeIndex] != "RELU_0_TO_1" or x < 0 or sg.tensors[x].type != flatbuffer.FLOAT32:
                new_ops.append(op)
                continue
            zero = _scalar(model, sg, 0.0, f"{flatbuffer.tensor_name(sg, x)}/relu01_zero")
            one = _scalar(model, sg, 1.0, f"{flatbuffer.tensor_name(sg, x)}/relu01_one")
            mid = flatbuffer.tensor_like(sg, sg.tensors[int(op.outputs[0])],
                                        flatbuffer.tensor_name(sg, int(op.outputs[0])) + "/relu01_max")
            for code, ins, outs in ((schema.BuiltinOperator.MAXIMUM, [x, zero], [mid]),
                                    (schema.BuiltinOperator.MINIMUM, [mid, one], [int(op.outputs[0])])):
                new = schema.OperatorT()
                new.opcodeIndex = flatbuffer.opcode_index(model, code)
                new.inputs, new.outputs = np.array(ins, np.int32), np.array(outs, np.int32)
                new_ops.append(new)
            done += 1
        sg.operators = new_ops
    return flatbuffer.dump(model), done


def _scalar(model, sg, value: float, name: str) -> int:
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    buf = schema.BufferT()
    buf.data = np.frombuffer(np.float32(value).tobytes(), np.uint8)
    model.buffers.append(buf)
    t = schema.TensorT()
    t.shape, t.type, t.buffer, t.name = np.array([], np.int32), flatbuffer.FLOAT32, len(model.buffers) - 1, name
    sg.tensors.append(t)
    return len(sg.tensors) - 1
