"""FP16 fallback: store the weights of chosen float ops as float16, as ``--mode fp16`` does for all ops.

TFLiteConverter's denylist leaves a layer in float32. This pass rewrites such a layer's float32
constant inputs (filter, bias) as float16 tensors feeding a DEQUANTIZE op, the same graph pattern the
converter writes in fp16 mode, which every LiteRT CPU/GPU runtime loads (the CPU dequantizes once at load
time; GPU delegates may compute in fp16). Microcontroller runtimes may lack float16 DEQUANTIZE: use
``--fallback fp32`` there.
"""
from __future__ import annotations

import numpy as np

MIN_ELEMENTS = 16  # tiny constants (scalars, shapes) are not worth a DEQUANTIZE op


def weights_to_fp16(content: bytes, float_nodes: set[str] | None) -> bytes:
    """Return ``content`` with the float32 constant inputs of ops producing ``float_nodes`` in float16
    (``None``: every op's)."""
    return _compress_weights(content, float_nodes, "float16")


def weights_to_int8(content: bytes) -> bytes:
    """Every conv/dense/matmul weight (rank >= 2) as int8, symmetric, one scale per output channel,
    dequantized to float32 once at load time: the weight-only form of ``--mode dynamic`` for a model that
    has no TensorFlow graph behind it (a float .tflite). Biases and small constants stay float32."""
    return _compress_weights(content, None, "int8")


def _compress_weights(content: bytes, float_nodes: set[str] | None, dtype: str) -> bytes:
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    from edgeq.tflite import flatbuffer

    model = flatbuffer.load(content)
    deq = flatbuffer.opcode_index(model, schema.BuiltinOperator.DEQUANTIZE)
    buffer_refs: dict[int, int] = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            buffer_refs[t.buffer] = buffer_refs.get(t.buffer, 0) + 1
    for sg in model.subgraphs:
        users: dict[int, int] = {}
        for op in sg.operators:
            for i in op.inputs:
                users[i] = users.get(i, 0) + 1
        new_ops = []
        for op in sg.operators:
            outs = [sg.tensors[o].name for o in op.outputs]
            outs = [n.decode() if isinstance(n, bytes) else n for n in outs]
            code = model.operatorCodes[op.opcodeIndex]
            op_code = max(code.builtinCode, code.deprecatedBuiltinCode)
            if dtype == "int8" and op_code not in _WEIGHT_OPS(schema):
                pass
            elif float_nodes is None or any(n in float_nodes for n in outs):
                for slot, t_idx in enumerate(op.inputs):
                    if t_idx < 0 or users.get(t_idx, 0) != 1 or buffer_refs.get(sg.tensors[t_idx].buffer) != 1:
                        continue  # shared constants stay as they are: another op may need float32
                    axis = 3 if op_code == schema.BuiltinOperator.DEPTHWISE_CONV_2D else 0
                    half = (_half_tensor(model, sg, schema, t_idx) if dtype == "float16"
                            else _int8_tensor(model, sg, schema, t_idx, axis))
                    if half is not None:
                        d = schema.OperatorT()
                        d.opcodeIndex, d.inputs, d.outputs = deq, [half], [t_idx]
                        new_ops.append(d)
            new_ops.append(op)
        sg.operators = new_ops
    return flatbuffer.dump(model)


def _WEIGHT_OPS(schema) -> set[int]:  # noqa: N802 - a constant that needs the lazily imported schema
    b = schema.BuiltinOperator
    return {b.CONV_2D, b.DEPTHWISE_CONV_2D, b.FULLY_CONNECTED, b.BATCH_MATMUL, b.TRANSPOSE_CONV, b.CONV_3D}


def _int8_tensor(model, sg, schema, t_idx: int, axis: int) -> int | None:
    """Move a float32 weight into a new per-channel int8 tensor; the old tensor becomes DEQUANTIZE's output."""
    from edgeq.tflite.flatbuffer import name_of

    t = sg.tensors[t_idx]
    buf = model.buffers[t.buffer] if t.buffer else None
    if t.type != schema.TensorType.FLOAT32 or buf is None or buf.data is None or len(t.shape) < 2:
        return None
    values = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), dtype="<f4").reshape(t.shape)
    if values.size < MIN_ELEMENTS:
        return None
    axis = axis if axis < values.ndim else 0
    moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    scale = np.maximum(np.abs(moved).max(axis=1), 1e-12).astype(np.float32) / 127.0
    shape = [1] * values.ndim
    shape[axis] = -1
    q = np.clip(np.round(values / scale.reshape(shape)), -127, 127).astype(np.int8)
    new_buf = schema.BufferT()
    new_buf.data = np.frombuffer(q.tobytes(), np.uint8)
    model.buffers.append(new_buf)
    qt = schema.TensorT()
    qt.shape, qt.type, qt.buffer = t.shape, schema.TensorType.INT8, len(model.buffers) - 1
    qt.name = name_of(t) + "_int8"
    params = schema.QuantizationParametersT()
    params.scale, params.zeroPoint, params.quantizedDimension = list(map(float, scale)), [0] * len(scale), axis
    qt.quantization = params
    sg.tensors.append(qt)
    t.buffer = 0
    buf.data = None
    return len(sg.tensors) - 1


def _half_tensor(model, sg, schema, t_idx: int) -> int | None:
    """Move a float32 constant into a new float16 tensor; the old tensor becomes DEQUANTIZE's output."""
    from edgeq.tflite.flatbuffer import name_of

    t = sg.tensors[t_idx]
    buf = model.buffers[t.buffer] if t.buffer else None
    if t.type != schema.TensorType.FLOAT32 or buf is None or buf.data is None or len(buf.data) == 0:
        return None
    values = np.frombuffer(bytes(np.asarray(buf.data, np.uint8)), dtype="<f4")
    if values.size < MIN_ELEMENTS:
        return None
    new_buf = schema.BufferT()
    new_buf.data = np.frombuffer(values.astype("<f2").tobytes(), np.uint8)
    model.buffers.append(new_buf)
    half = schema.TensorT()
    half.shape, half.type, half.buffer = t.shape, schema.TensorType.FLOAT16, len(model.buffers) - 1
    half.name = name_of(t) + "_fp16"
    sg.tensors.append(half)
    t.buffer = 0  # buffer 0 is the empty sentinel: the float32 tensor is now computed at load time
    buf.data = None
    return len(sg.tensors) - 1
