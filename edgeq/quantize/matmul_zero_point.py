"""Give every int8 BATCH_MATMUL a right-hand input with zero point 0.

TFLiteConverter quantizes activations asymmetrically, so the right-hand input of an activation x
activation BATCH_MATMUL (attention's ``probs @ V``, ``Q @ K^T``, masked mean pooling) usually gets a
nonzero zero point. LiteRT's builtin kernel handles that, but the XNNPACK delegate - the default CPU
path on phones, boards and this host - computed such a BATCH_MATMUL wrong up to ai-edge-litert 2.1.2
(the host runtime here) and TensorFlow 2.21's bundled TFLite; ai-edge-litert 2.3.0 gets it right.
Measured on the tiny encoder sample with 2.1.2: ``probs @ V`` with rhs zero point 8 is 78% off
(relative L2) under XNNPACK and 1.4% in the builtin kernel; all-MiniLM-L6-v2's full-INT8 embedding
fell to cosine 0.28. Apps ship older runtimes for years, so edgeq's models avoid the case.

This pass inserts one int8 -> int8 QUANTIZE (a requantization) in front of each such input, to the
symmetric scale that covers the same real range. It costs one cheap elementwise op per matmul and at
most one bit of that tensor's resolution; constant right-hand inputs (weights) are left alone.
"""
from __future__ import annotations

import numpy as np


def symmetric_matmul_rhs(content: bytes) -> tuple[bytes, int]:
    """Return ``content`` with int8 BATCH_MATMUL right-hand inputs requantized to zero point 0, and how
    many inputs were changed (``content`` itself when none)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils as fu

    from edgeq.quantize.fp16_weights import _opcode_index

    if not _has_batch_matmul(content, schema):  # unpacking a big model costs seconds; most have no matmul
        return content, 0
    model = fu.convert_bytearray_to_object(bytearray(content))
    bmm = {i for i, oc in enumerate(model.operatorCodes)
           if max(oc.builtinCode, oc.deprecatedBuiltinCode) == schema.BuiltinOperator.BATCH_MATMUL}
    changed = 0
    quant = None
    for sg in model.subgraphs:
        requantized: dict[int, int] = {}  # source tensor -> its symmetric copy (shared by several matmuls)
        new_ops = []
        for op in sg.operators:
            if op.opcodeIndex in bmm and len(op.inputs) >= 2 and _needs_symmetric(model, sg, schema, op.inputs[1]):
                src = op.inputs[1]
                if src not in requantized:
                    if quant is None:
                        quant = _opcode_index(model, schema, schema.BuiltinOperator.QUANTIZE)
                    requantized[src] = _symmetric_copy(sg, schema, src)
                    q = schema.OperatorT()
                    q.opcodeIndex, q.inputs, q.outputs = quant, [src], [requantized[src]]
                    new_ops.append(q)
                op.inputs[1] = requantized[src]
                changed += 1
            new_ops.append(op)
        sg.operators = new_ops
    if not changed:
        return content, 0
    return bytes(fu.convert_object_to_bytearray(model)), changed


SUFFIX = "_zp0"  # name of a requantized copy: lets a report count them in the finished model


def requantized_inputs(content: bytes) -> int:
    """How many matmul inputs of a finished model this pass requantized (0 for other models)."""
    from tensorflow.lite.python import schema_py_generated as schema

    if not _has_batch_matmul(content, schema):
        return 0
    m = schema.Model.GetRootAs(content, 0)
    return sum(1 for s in range(m.SubgraphsLength()) for sg in [m.Subgraphs(s)]
               for t in range(sg.TensorsLength()) if (sg.Tensors(t).Name() or b"").endswith(SUFFIX.encode()))


def note(count: int) -> str:
    """The report line for ``count`` requantized inputs."""
    return (f"{count} int8 BATCH_MATMUL right-hand input(s) requantized to zero point 0: LiteRT's XNNPACK "
            "delegate up to ai-edge-litert 2.1.2 / TFLite 2.21 computes int8 BATCH_MATMUL wrong otherwise")


def _has_batch_matmul(content: bytes, schema) -> bool:
    m = schema.Model.GetRootAs(content, 0)
    return any(max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode())
               == schema.BuiltinOperator.BATCH_MATMUL for i in range(m.OperatorCodesLength()))


def _needs_symmetric(model, sg, schema, t_idx: int) -> bool:
    t = sg.tensors[t_idx]
    q = t.quantization
    if t.type != schema.TensorType.INT8 or q is None or q.zeroPoint is None or len(q.zeroPoint) != 1:
        return False
    buf = model.buffers[t.buffer] if t.buffer else None
    constant = buf is not None and buf.data is not None and len(buf.data) > 0
    return not constant and int(q.zeroPoint[0]) != 0


def _symmetric_copy(sg, schema, t_idx: int) -> int:
    """A new int8 tensor like ``t_idx`` whose scale covers the same real range with zero point 0."""
    t = sg.tensors[t_idx]
    scale, zp = float(t.quantization.scale[0]), int(t.quantization.zeroPoint[0])
    reach = max(abs(-128 - zp), abs(127 - zp)) * scale  # farthest real value the source can hold
    copy = schema.TensorT()
    copy.shape = None if t.shape is None else np.array(t.shape, np.int32)
    copy.shapeSignature = None if t.shapeSignature is None else np.array(t.shapeSignature, np.int32)
    copy.type, copy.buffer = schema.TensorType.INT8, 0
    name = t.name.decode() if isinstance(t.name, bytes) else t.name
    copy.name = name + SUFFIX
    copy.quantization = schema.QuantizationParametersT()
    copy.quantization.scale = [reach / 127.0]
    copy.quantization.zeroPoint = [0]
    sg.tensors.append(copy)
    return len(sg.tensors) - 1
