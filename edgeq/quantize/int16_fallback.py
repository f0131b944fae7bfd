"""``--fallback int16``: chosen ops of a full-INT8 model rewritten to LiteRT's 16x8 kernels, all-integer.

The chosen ops get int16 activations (symmetric, zero point 0) and keep their int8 weights; their biases
become int64, as in TensorFlow's 16x8 models. Borders stay integer:

* int16 -> int8: one QUANTIZE (LiteRT requantizes int16 to int8), shared by every int8 reader; a DEQUANTIZE
  to a float model output reads the int16 tensor itself.
* int8 -> int16: LiteRT's QUANTIZE refuses it (an int8 input requantizes to int8/uint8 only), so a CAST
  copies the raw int8 values into int16 (the real value plus zero point x scale, at the int8 scale) and an
  int16 ADD of the constant -zero point x scale removes the offset and rescales to the symmetric int16 scale.
  A float model input read by a chosen op is quantized straight to int16 instead.

No float enters the compute, so NPUs and DSPs that reject float still take the model, provided they have
the 16x8 kernels (many list them separately, or not at all).

The int16 ranges come from the int8 model itself: each activation's int8 (scale, zero point) is the
calibrated range [min, max] (nudged to hold 0), and the int16 scale is max(|min|, |max|) / 32767, what
TensorFlow's 16x8 quantizer gives from the same range. So one calibration serves both precisions. Fixed
output ranges (SOFTMAX, LOGISTIC, TANH: 1/32768) follow the kernels. Biases are requantized from the float
model's values when given (:func:`float_biases` of the calibrated model), else from the int8 model's int32
bias.

Only ops whose int16 kernels LiteRT 2.1.2 runs (``INT16_OPS``, checked by tests/test_int16_fallback.py) are
rewritten; any other op of a chosen group stays int8. The rewrite of every op of a small CNN matches
TensorFlow's own 16x8 model of it to within 1e-4 (the test pins it).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from edgeq.tflite import flatbuffer

SUFFIX_16 = "_edgeq_i16"  # the int16 output of a moved op (the int8 original keeps the layer's name)
BORDER = "_edgeq_border16"  # tensors of the CAST + ADD pair that widens an int8 activation to int16

# Op -> input slot of its bias (None: no bias input). Each runs with int16 activations in LiteRT 2.1.2.
INT16_OPS: dict[str, int | None] = {
    "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2,
    "ADD": None, "SUB": None, "MUL": None, "MEAN": None, "AVERAGE_POOL_2D": None, "MAX_POOL_2D": None,
    "SOFTMAX": None, "LOGISTIC": None, "TANH": None, "CONCATENATION": None,
    "RELU": None, "RELU6": None, "PAD": None, "LEAKY_RELU": None, "RESIZE_BILINEAR": None, "STRIDED_SLICE": None,
}
WEIGHT_SLOT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}
# Kernels with a fixed int16 output scale (zero point 0).
FIXED_OUTPUT_SCALE = {"SOFTMAX": 1.0 / 32768, "LOGISTIC": 1.0 / 32768, "TANH": 1.0 / 32768}
# Refused by LiteRT 2.1.2 with int16 activations (tests pin it): HARD_SWISH ("Only float32, uint8 and int8 are
# supported currently, got INT16"); QUANTIZE int8 -> int16 ("output->type == kTfLiteUInt8 || output->type ==
# kTfLiteInt8 was not true", quantize.cc: int8 input requantizes to int8/uint8 only).
FLOAT32, INT8, INT16, INT32, INT64 = 0, 9, 7, 2, 4  # TensorType values


@dataclass(frozen=True)
class Int16Rewrite:
    """What :func:`to_int16` did: the model and the ops it moved to 16-bit (output tensor names)."""

    content: bytes
    int16_nodes: tuple[str, ...]
    border_ops: int  # ops added at int8 <-> int16 borders (QUANTIZE down, CAST + ADD up)


def int16_scale(scale: float, zero_point: int) -> float:
    """Symmetric int16 scale covering the int8 tensor's range [(-128 - zp) s, (127 - zp) s]."""
    reach = max(abs((-128 - zero_point) * scale), abs((127 - zero_point) * scale))
    return max(reach, 1e-12) / 32767.0


def float_biases(calibrated: bytes) -> dict[str, np.ndarray]:
    """Output tensor name -> float32 bias of every conv/depthwise/dense op of a calibrated float model."""
    model = flatbuffer.load(calibrated)
    names = flatbuffer.op_names(model)
    out: dict[str, np.ndarray] = {}
    for sg in model.subgraphs[:1]:
        for op in sg.operators:
            slot = INT16_OPS.get(names[op.opcodeIndex])
            if slot is None or len(op.inputs) <= slot or op.inputs[slot] < 0 or not len(op.outputs):
                continue
            value = flatbuffer.const(model, sg, int(op.inputs[slot]))
            if value is not None:
                out[flatbuffer.tensor_name(sg, int(op.outputs[0]))] = value.astype(np.float32).ravel()
    return out


def to_int16(content: bytes, nodes: Iterable[str], biases: dict[str, np.ndarray] | None = None) -> Int16Rewrite:
    """Rewrite the ops of the int8 model ``content`` whose output is named in ``nodes`` to int16 activations.

    Ops outside :data:`INT16_OPS`, and ops with any non-int8 activation, stay as they are."""
    model = flatbuffer.load(content)
    sg = model.subgraphs[0]
    names = flatbuffer.op_names(model)
    wanted = set(nodes)
    const = {i for i, t in enumerate(sg.tensors) if flatbuffer.raw_data(model, t) is not None}
    readers = flatbuffer.readers(sg)
    label = {int(o): n for op in sg.operators for o in op.outputs if (n := _layer_name(sg, names, readers, int(o)))}
    chosen = [k for k, op in enumerate(sg.operators)
              if names[op.opcodeIndex] in INT16_OPS and len(op.outputs)
              and any(label.get(int(o)) in wanted for o in op.outputs)
              and all(sg.tensors[int(i)].type == INT8 for i in [*op.inputs, *op.outputs]
                      if i >= 0 and int(i) not in const)]
    if not chosen:
        return Int16Rewrite(content, (), 0)
    chosen_set = set(chosen)
    moved = tuple(label[int(sg.operators[k].outputs[0])] for k in chosen)
    graph_outputs = {int(o) for o in sg.outputs}
    quant = flatbuffer.opcode_index(model, flatbuffer.schema().BuiltinOperator.QUANTIZE)
    model.operatorCodes[quant].version = max(model.operatorCodes[quant].version, 2)  # int16 requantization
    after: dict[int, list] = {}  # op index (-1: graph start) -> border ops to emit after it
    producer = {int(o): k for k, op in enumerate(sg.operators) for o in op.outputs}
    twin16: dict[int, int] = {}  # int8 tensor -> its int16 version
    # Outputs of chosen ops become int16; the int8 original is produced by a QUANTIZE when int8 readers need it,
    # a DEQUANTIZE to a float model output reads the int16 tensor itself.
    for k in chosen:
        op = sg.operators[k]
        kind = names[op.opcodeIndex]
        for j, o in enumerate(op.outputs):
            o = int(o)
            fixed = FIXED_OUTPUT_SCALE.get(kind)
            twin16[o] = _int16_tensor(sg, o, fixed, SUFFIX_16, label.get(o))
            op.outputs[j] = twin16[o]
            others = [r for r in readers.get(o, []) if r not in chosen_set]
            for r in others:
                if names[sg.operators[r].opcodeIndex] == "DEQUANTIZE":  # float model output: from int16 directly
                    sg.operators[r].inputs = [twin16[o]]
            if o in graph_outputs or any(names[sg.operators[r].opcodeIndex] != "DEQUANTIZE" for r in others):
                after.setdefault(k, []).append(_quantize_op(quant, twin16[o], o))
    # Inputs of chosen ops: int16 twins of int8 activations (made once each), int16 biases and constants.
    for k in chosen:
        op = sg.operators[k]
        kind = names[op.opcodeIndex]
        for slot, i in enumerate(list(op.inputs)):
            i = int(i)
            if i < 0:
                continue
            if i in const:
                if slot == INT16_OPS[kind]:
                    op.inputs[slot] = _bias64(model, sg, op, slot, biases or {}, twin16)
                elif slot != WEIGHT_SLOT.get(kind) and sg.tensors[i].type == INT8:
                    op.inputs[slot] = _const16(model, sg, i)
                continue
            if i not in twin16:
                twin16[i] = _int16_tensor(sg, i, None, BORDER)
                src = sg.operators[producer[i]] if i in producer else None
                if (src is not None and names[src.opcodeIndex] == "QUANTIZE"
                        and sg.tensors[int(src.inputs[0])].type == FLOAT32):
                    # a float model input: quantize it straight to int16, as a 16x8 model does
                    after.setdefault(producer[i], []).append(_quantize_op(quant, int(src.inputs[0]), twin16[i]))
                else:
                    after.setdefault(producer.get(i, -1), []).extend(_widen(model, sg, i, twin16[i]))
            op.inputs[slot] = twin16[i]
        if kind in ("ADD", "SUB") and op.builtinOptions is not None:
            op.builtinOptions.potScaleInt16 = False  # general rescaling, as TensorFlow's 16x8 quantizer writes
    new_ops = list(after.get(-1, []))
    for k, op in enumerate(sg.operators):
        new_ops.append(op)
        new_ops.extend(after.get(k, []))
    added = len(new_ops) - len(sg.operators)
    sg.operators = new_ops
    return Int16Rewrite(flatbuffer.dump(model), moved, added)


def _quantize_op(opcode: int, src: int, dst: int):
    op = flatbuffer.schema().OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = opcode, [src], [dst]
    return op


def _widen(model, sg, i: int, dst: int) -> list:
    """int8 ``i`` -> int16 ``dst`` without float: LiteRT's QUANTIZE refuses int8 -> int16, so CAST copies the
    raw int8 values into int16 (real value + zp x scale at the int8 scale), and an int16 ADD of the constant
    -zp x scale removes the offset and rescales to ``dst``'s symmetric int16 scale."""
    s = flatbuffer.schema()
    t = sg.tensors[i]
    scale, zp = _scale_zp(t)
    raw = flatbuffer.tensor_like(sg, t, flatbuffer.name_of(t) + "_cast" + BORDER, INT16)
    sg.tensors[raw].quantization = _params([scale])
    offset = -zp * scale
    c_scale = abs(offset) / 32767.0 if offset else scale
    const = _new_const(model, sg, t, np.array([round(offset / c_scale)], "<i2"), INT16, _params([c_scale]))
    sg.tensors[const].shape = np.array([], np.int32)
    sg.tensors[const].name = flatbuffer.name_of(t) + "_zp" + BORDER
    cast = s.OperatorT()
    cast.opcodeIndex = flatbuffer.opcode_index(model, s.BuiltinOperator.CAST)
    cast.inputs, cast.outputs = [i], [raw]
    add = s.OperatorT()
    add.opcodeIndex = flatbuffer.opcode_index(model, s.BuiltinOperator.ADD)
    add.inputs, add.outputs = [raw, const], [dst]
    add.builtinOptionsType = s.BuiltinOptions.AddOptions
    add.builtinOptions = s.AddOptionsT()
    add.builtinOptions.potScaleInt16 = False
    return [cast, add]


def _params(scales: list[float], dim: int = 0):
    q = flatbuffer.schema().QuantizationParametersT()
    q.scale, q.zeroPoint, q.quantizedDimension = [float(s) for s in scales], [0] * len(scales), dim
    return q


def _scale_zp(t) -> tuple[float, int]:
    q = t.quantization
    return float(q.scale[0]), int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0


def _layer_name(sg, names: list[str], readers: dict[int, list[int]], o: int) -> str:
    """The name the calibrated float model gives tensor ``o`` (what ``nodes`` holds): its own, except for
    a model output with float I/O, where the int8 tensor is renamed (a digit appended) and the DEQUANTIZE
    after it carries the original name."""
    name = flatbuffer.tensor_name(sg, o)
    deq = [r for r in readers.get(o, []) if names[sg.operators[r].opcodeIndex] == "DEQUANTIZE"]
    if deq and len(deq) == len(readers.get(o, [])):
        return flatbuffer.tensor_name(sg, int(sg.operators[deq[0]].outputs[0]))
    return name


def _int16_tensor(sg, i: int, fixed_scale: float | None, suffix: str, name: str | None = None) -> int:
    t = sg.tensors[i]
    new = flatbuffer.tensor_like(sg, t, (name or flatbuffer.name_of(t)) + suffix, INT16)
    sg.tensors[new].quantization = _params([fixed_scale if fixed_scale else int16_scale(*_scale_zp(t))])
    return new


def _const16(model, sg, i: int) -> int:
    """An int8 constant operand (ADD/MUL by a constant) as an int16 constant with a symmetric scale."""
    t = sg.tensors[i]
    scale, zp = _scale_zp(t)
    real = (flatbuffer.raw_data(model, t).view(np.int8).astype(np.float64) - zp) * scale
    s16 = max(float(np.max(np.abs(real))), 1e-12) / 32767.0
    values = np.clip(np.round(real / s16), -32767, 32767).astype("<i2")
    return _new_const(model, sg, t, values, INT16, _params([s16]))


def _bias64(model, sg, op, slot: int, biases: dict[str, np.ndarray], twin16: dict[int, int]) -> int:
    """The bias for int16 input x int8 weights: int64 at scale input16 x weight (per channel)."""
    t = sg.tensors[int(op.inputs[slot])]
    w = sg.tensors[int(op.inputs[1])].quantization
    w_scale = np.asarray(w.scale, np.float64)
    in16 = float(sg.tensors[int(op.inputs[0])].quantization.scale[0])  # already the int16 twin
    back = {v: key for key, v in twin16.items()}
    out_name = flatbuffer.tensor_name(sg, back.get(int(op.outputs[0]), int(op.outputs[0])))
    real = biases.get(out_name)
    if real is None or real.size != int(np.prod(t.shape)):
        q = t.quantization
        raw = flatbuffer.raw_data(model, t)
        ints = raw.view("<i4") if t.type == INT32 else raw.view("<i8")
        real = ints.astype(np.float64) * np.asarray(q.scale, np.float64)
    scales = in16 * w_scale  # one per output channel, or one for per-tensor weights
    values = np.round(np.asarray(real, np.float64) / np.broadcast_to(scales, real.shape)).astype("<i8")
    return _new_const(model, sg, t, values, INT64, _params(list(scales), 0))


def _new_const(model, sg, like, values: np.ndarray, dtype: int, params) -> int:
    s = flatbuffer.schema()
    buf = s.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)
    model.buffers.append(buf)
    t = s.TensorT()
    t.shape = np.array(like.shape, np.int32)
    t.type, t.buffer, t.quantization = dtype, len(model.buffers) - 1, params
    t.name = flatbuffer.name_of(like) + SUFFIX_16
    sg.tensors.append(t)
    return len(sg.tensors) - 1
