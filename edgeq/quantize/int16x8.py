"""16x8 quantization (int16 activations, int8 weights) that also works on graphs with integer tensors and SUM.

TensorFlow quantizes 16x8 with its older, non-MLIR quantizer, whose limits break PyTorch encoders (token ids,
attention mask, mean pooling) while the int8 path converts them:

1. **Integer tensors.** Token ids go through CAST/LESS/SELECT (onnx2tf's negative-index handling in front of
   GATHER). The calibrator records ranges of float tensors only, but the quantizer demands one for every input
   of an op it can quantize in int8 and not in int16 (LESS, SELECT): "Max and min for dynamic tensors should
   be recorded during calibration: Failed for tensor Cast". Integer tensors get a placeholder range after
   calibration; the ops stay integer and the range is never used (checked after quantization).
2. **Integer ops.** With only the 16x8 op set it refuses every op without a 16x8 kernel, integer ones (CAST,
   LESS) included. edgeq quantizes with float fallback; ops that really compute in float (mean pooling's DIV:
   LiteRT has no int16 DIV) stay float and the report lists them under "float ops".
3. **SUM.** The int16 SUM kernel cannot rescale, so the quantizer gives SUM's output its input's scale: the
   token count (a sum of 0/1 mask values) saturates at 1 and mean pooling returns the sum (16x too large on
   the tiny encoder sample, with a cosine that still looks perfect). Before calibration every SUM becomes
   MEAN (whose int16 kernel rescales) times the number of summed elements: the same value in float.
4. **Shared buffers.** The FP32 flatbuffer edgeq quantizes has equal constants deduplicated (an int32 0 and
   a float 0.0 share four bytes); the quantizer rewrites the float one in place as int16 and corrupts the
   integer one. Constants get buffers of their own first.

On graphs that need none of this (a CNN) the result is exactly TFLiteConverter's own 16x8 model.
"""
from __future__ import annotations

import copy

import numpy as np

from edgeq.errors import ConversionError
from edgeq.nativeio import quiet_native_output
from edgeq.tflite import flatbuffer

MEAN_SUFFIX = "_edgeq_mean"


def quantize_16x8(float_bytes: bytes, representative, disable_per_channel: bool = False) -> bytes:
    """Calibrate the FP32 flatbuffer ``float_bytes`` on ``representative`` (a generator function of
    input dicts) and quantize it to int16 activations / int8 weights, float where no 16x8 kernel exists."""
    return quantize_calibrated_16x8(calibrate_16x8(float_bytes, representative), disable_per_channel)


def calibrate_16x8(float_bytes: bytes, representative) -> bytes:
    """The float flatbuffer with SUM rewritten and the calibrator's activation ranges recorded: what
    ``quantize_calibrated_16x8`` quantizes. PTQ edits its weights and quantizes it again with the same
    ranges (``prepare/ptq.py``)."""
    from tensorflow.lite.python.optimize import calibrator as cal

    prepared, _ = sum_as_mean(float_bytes)
    with quiet_native_output():
        return cal.Calibrator(cal.add_intermediate_tensors(prepared)).calibrate(representative)


def quantize_calibrated_16x8(calibrated: bytes, disable_per_channel: bool = False) -> bytes:
    """16x8 of a model ``calibrate_16x8`` made, with the ranges it carries."""
    from tensorflow.lite.python import lite as tflite_lite
    from tensorflow.lite.python.optimize import calibrator as cal

    ranged, placeholders = _integer_placeholder_ranges(calibrated)
    f32, i16, i64 = (np.dtype(t).num for t in (np.float32, np.int16, np.int64))
    with quiet_native_output():
        # A calibrator without fed samples adds no statistics: it quantizes with the ranges the model carries.
        quantized = cal.Calibrator(ranged)._calibrator.QuantizeModel(  # noqa: SLF001 - no public entry
            f32, f32, True, i16, i64, disable_per_channel, False)
    content = _drop_placeholders(quantized, placeholders)
    return tflite_lite._deduplicate_readonly_buffers(content)  # noqa: SLF001 - as convert() does


def sum_as_mean(content: bytes) -> tuple[bytes, int]:
    """Rewrite every float SUM with a static reduced size into MEAN x N; returns (model, rewrites)."""
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    model = flatbuffer.load(content)
    sum_code = schema.BuiltinOperator.SUM
    sums = {i for i, oc in enumerate(model.operatorCodes) if max(oc.builtinCode, oc.deprecatedBuiltinCode) == sum_code}
    if not sums:
        return content, 0
    done = 0
    for sg in model.subgraphs:
        new_ops = []
        for op in sg.operators:
            new_ops.append(op)
            n = _summed_elements(model, sg, schema, op) if op.opcodeIndex in sums else None
            if n is None:
                continue
            y = op.outputs[0]
            out = sg.tensors[y]
            mean_out = flatbuffer.tensor_like(sg, out, _name(out) + MEAN_SUFFIX)
            count = _scalar_constant(model, sg, schema, float(n), _name(out) + MEAN_SUFFIX + "_count")
            op.opcodeIndex = flatbuffer.opcode_index(model, schema.BuiltinOperator.MEAN)  # same ReducerOptions
            op.outputs = [mean_out]
            mul = schema.OperatorT()
            mul.opcodeIndex = flatbuffer.opcode_index(model, schema.BuiltinOperator.MUL)
            mul.inputs, mul.outputs = [mean_out, count], [y]
            mul.builtinOptionsType = schema.BuiltinOptions.MulOptions
            mul.builtinOptions = schema.MulOptionsT()
            new_ops.append(mul)
            done += 1
        sg.operators = new_ops
    if not done:
        return content, 0
    _drop_unused_opcodes(model)
    return flatbuffer.dump(model), done


def _drop_unused_opcodes(model) -> None:
    """TF's calibrator registers the kernels of the ops in use, then fails on any other operator code."""
    used = sorted({op.opcodeIndex for sg in model.subgraphs for op in sg.operators})
    new_index = {old: new for new, old in enumerate(used)}
    model.operatorCodes = [model.operatorCodes[i] for i in used]
    for sg in model.subgraphs:
        for op in sg.operators:
            op.opcodeIndex = new_index[op.opcodeIndex]


_name, _constant = flatbuffer.name_of, flatbuffer.raw_data


def _summed_elements(model, sg, schema, op) -> int | None:
    """How many elements one SUM output adds up, or None (non-float, dynamic reduced dims, unknown axes)."""
    if len(op.inputs) != 2 or len(op.outputs) != 1:
        return None
    x, axes_t = sg.tensors[op.inputs[0]], sg.tensors[op.inputs[1]]
    raw = _constant(model, axes_t)
    if x.type != schema.TensorType.FLOAT32 or raw is None or x.shape is None:
        return None
    axes = raw.view(np.int32 if axes_t.type == schema.TensorType.INT32 else np.int64).astype(int).ravel()
    rank = len(x.shape)
    sig = list(x.shapeSignature) if x.shapeSignature is not None and len(x.shapeSignature) else list(x.shape)
    dims = [int(sig[a % rank]) for a in set(int(a) % rank for a in axes)]
    if not dims or any(d <= 0 for d in dims):
        return None
    return int(np.prod(dims))


def _scalar_constant(model, sg, schema, value: float, name: str) -> int:
    buf = schema.BufferT()
    buf.data = np.frombuffer(np.float32(value).tobytes(), np.uint8).copy()
    model.buffers.append(buf)
    t = schema.TensorT()
    t.shape = np.array([], np.int32)
    t.type, t.buffer, t.name = schema.TensorType.FLOAT32, len(model.buffers) - 1, name
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def _integer_placeholder_ranges(calibrated: bytes) -> tuple[bytes, dict[tuple[int, int], int]]:
    """Give integer/bool activation tensors without a recorded range a [0, 0] one (see module doc, 1);
    constants get buffers of their own on the way."""
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    model = flatbuffer.load(calibrated)
    _unshare_buffers(model)
    marked = {}  # (subgraph, tensor) -> its type
    for s, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors):
            q = t.quantization
            if t.type in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16) or _constant(model, t) is not None:
                continue
            if q is not None and q.min is not None and len(q.min):
                continue
            t.quantization = q or schema.QuantizationParametersT()
            t.quantization.min, t.quantization.max = [0.0], [0.0]
            marked[(s, i)] = t.type
    return flatbuffer.dump(model), marked


def _unshare_buffers(model) -> None:
    """Give every constant its own buffer (module doc, 4). all-MiniLM-L6-v2's LESS(ids, 0) failed to load:
    "Tensor ... is invalidly specified in schema". convert() quantizes before it deduplicates buffers;
    edgeq quantizes the deduplicated FP32 flatbuffer, so it undoes the sharing first."""
    seen = set()
    for sg in model.subgraphs:
        for t in sg.tensors:
            if not t.buffer or model.buffers[t.buffer].data is None or len(model.buffers[t.buffer].data) == 0:
                continue
            if t.buffer in seen:
                model.buffers.append(copy.deepcopy(model.buffers[t.buffer]))
                t.buffer = len(model.buffers) - 1
            seen.add(t.buffer)


def _drop_placeholders(quantized: bytes, marked: dict[tuple[int, int], int]) -> bytes:
    """Remove the placeholder ranges again; none of those tensors may have been quantized (the quantizer
    keeps the original tensors' indices)."""
    if not marked:
        return quantized
    model = flatbuffer.load(quantized)
    for (s, i), dtype in marked.items():
        t = model.subgraphs[s].tensors[i]
        q = t.quantization
        if t.type != dtype or q is None or (q.scale is not None and len(q.scale)):
            raise ConversionError(f"16x8 quantization used the placeholder range of integer tensor '{_name(t)}'")
        q.min = q.max = None
    return flatbuffer.dump(model)
