"""Requantize the int8 inputs that two LiteRT kernels get wrong, so edgeq's models are right everywhere.

* **BATCH_MATMUL right-hand input with a nonzero zero point.** TFLiteConverter quantizes activations
  asymmetrically, so the right-hand input of an activation x activation BATCH_MATMUL (attention's
  ``probs @ V``, ``Q @ K^T``, masked mean pooling) usually gets a nonzero zero point. The builtin kernel
  handles that, but the XNNPACK delegate - the default CPU path on phones, boards and this host -
  computed it wrong up to ai-edge-litert 2.1.2 (the host runtime here) and TensorFlow 2.21's bundled
  TFLite; ai-edge-litert 2.3.0 gets it right. Measured on the tiny encoder sample with 2.1.2:
  ``probs @ V`` with rhs zero point 8 is 78% off (relative L2) under XNNPACK, 1.4% in the builtin
  kernel; all-MiniLM-L6-v2's full-INT8 embedding fell to cosine 0.28. The input is requantized to the
  symmetric scale covering the same range (zero point 0).
* **DIV divisor whose raw int8 value can be 0.** The builtin DIV refuses to run when any *raw* divisor
  byte is 0 (a divide-by-zero guard that ignores the zero point), so a non-negative divisor quantized
  with zero point -128 crashes the interpreter whenever its real value is 128 x scale - the tiny
  encoder's mean pooling crashed on every 8-token sentence without XNNPACK. Such a divisor is
  requantized to zero point 1, where every non-negative value has a raw byte >= 1.

Apps ship older runtimes for years, so every int8 model edgeq writes avoids both cases. Each fix is one
int8 -> int8 QUANTIZE (a requantization) in front of the input, shared by all its readers; it costs at
most one bit of that tensor's resolution. Constant inputs (weights) are left alone.
"""
from __future__ import annotations

from dataclasses import dataclass

SUFFIX = "_edgeq_rq"  # names the requantized copies: a report can count them in the finished model


@dataclass(frozen=True)
class _Rule:
    opcode: str  # BuiltinOperator name
    slot: int  # which input of the op
    params: object  # (scale, zero_point) -> new (scale, zero_point), or None when the input is fine
    why: str  # what goes wrong, for `edgeq inspect` of a model converted elsewhere


def _symmetric(scale: float, zp: int):
    if zp == 0:
        return None
    reach = max(abs(-128 - zp), abs(127 - zp)) * scale  # farthest real value the input can hold
    return reach / 127.0, 0


def _raw_zero_free(scale: float, zp: int):
    if zp != -128:  # only non-negative divisors: a signed one can be ~0, and then no requantization helps
        return None
    return scale * 255 / 126, 1  # [0, hi] onto raw [1, 127]


RULES = (_Rule("BATCH_MATMUL", 1, _symmetric, "wrong results under XNNPACK up to ai-edge-litert 2.1.2 / TFLite 2.21"),
         _Rule("DIV", 1, _raw_zero_free, "the builtin DIV fails when the divisor's raw byte is 0 (real 128 x scale)"))


def fix_int8_kernels(content: bytes) -> tuple[bytes, int]:
    """Return ``content`` with the inputs of :data:`RULES` requantized, and how many were changed
    (``content`` itself when none)."""
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    from edgeq.tflite import flatbuffer

    if not _has_ops(content, schema):  # unpacking a big model costs seconds; most have neither op
        return content, 0
    model = flatbuffer.load(content)
    code = {getattr(schema.BuiltinOperator, r.opcode): r for r in RULES}
    rule_of = {i: code[b] for i, oc in enumerate(model.operatorCodes)
               if (b := max(oc.builtinCode, oc.deprecatedBuiltinCode)) in code}
    changed = 0
    quant = None
    for sg in model.subgraphs:
        copies: dict[tuple[int, tuple], int] = {}  # (source tensor, new params) -> requantized copy
        new_ops = []
        for op in sg.operators:
            rule = rule_of.get(op.opcodeIndex)
            params = rule and len(op.inputs) > rule.slot and _wanted(model, sg, schema, op.inputs[rule.slot], rule)
            if params:
                key = (op.inputs[rule.slot], params)
                if key not in copies:
                    if quant is None:
                        quant = flatbuffer.opcode_index(model, schema.BuiltinOperator.QUANTIZE)
                    copies[key] = _requantized_copy(sg, schema, key[0], params)
                    q = schema.OperatorT()
                    q.opcodeIndex, q.inputs, q.outputs = quant, [key[0]], [copies[key]]
                    new_ops.append(q)
                op.inputs[rule.slot] = copies[key]
                changed += 1
            new_ops.append(op)
        sg.operators = new_ops
    if not changed:
        return content, 0
    return flatbuffer.dump(model), changed


def requantized_inputs(content: bytes) -> int:
    """How many inputs of a finished model this pass requantized (0 for other models)."""
    from edgeq.tflite.flatbuffer import schema as _schema
    schema = _schema()

    if not _has_ops(content, schema):
        return 0
    m = schema.Model.GetRootAs(content, 0)
    return sum(1 for s in range(m.SubgraphsLength()) for sg in [m.Subgraphs(s)]
               for t in range(sg.TensorsLength()) if (sg.Tensors(t).Name() or b"").endswith(SUFFIX.encode()))


def note(count: int) -> str:
    """The report line for ``count`` requantized inputs."""
    return (f"{count} int8 BATCH_MATMUL/DIV input(s) requantized (one QUANTIZE each) around LiteRT kernel "
            "bugs: XNNPACK <= 2.1.2 matmul zero points, the builtin DIV's raw-zero check")


def _has_ops(content: bytes, schema) -> bool:
    wanted = {getattr(schema.BuiltinOperator, r.opcode) for r in RULES}
    m = schema.Model.GetRootAs(content, 0)
    return any(max(m.OperatorCodes(i).BuiltinCode(), m.OperatorCodes(i).DeprecatedBuiltinCode()) in wanted
               for i in range(m.OperatorCodesLength()))


def _wanted(model, sg, schema, t_idx: int, rule: _Rule):
    """The new (scale, zero point) for input ``t_idx``, or None when it needs none."""
    t = sg.tensors[t_idx]
    q = t.quantization
    if t.type != schema.TensorType.INT8 or q is None or q.zeroPoint is None or len(q.zeroPoint) != 1:
        return None
    from edgeq.tflite.flatbuffer import raw_data

    if raw_data(model, t) is not None:
        return None  # a constant: its bytes are known and fixed
    return rule.params(float(q.scale[0]), int(q.zeroPoint[0]))


def _requantized_copy(sg, schema, t_idx: int, params: tuple[float, int]) -> int:
    from edgeq.tflite.flatbuffer import name_of, tensor_like

    t = sg.tensors[t_idx]
    index = tensor_like(sg, t, name_of(t) + SUFFIX, schema.TensorType.INT8)
    q = sg.tensors[index].quantization = schema.QuantizationParametersT()
    q.scale, q.zeroPoint = [float(params[0])], [int(params[1])]
    return index
