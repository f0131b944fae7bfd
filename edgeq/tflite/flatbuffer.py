"""Reading and editing a TFLite flatbuffer's object form: the one place edgeq touches the schema.

The schema classes come from ``ai_edge_litert`` (the runtime that reads the models; it ships the generated
module), so a converter upgrade on the TensorFlow side touches nothing here. Every pass that rewrites a
quantized or float flatbuffer (PTQ folding, fp16/int8 weights, kernel workarounds, 16x8 preparation,
XNNPACK-friendly rewrites) uses these instead of its own copies."""
from __future__ import annotations

import copy

import numpy as np

NONE, RELU = 0, 1  # ActivationFunctionType values in the TFLite schema
FLOAT32, INT32, UINT8, INT64, INT16, INT8 = 0, 2, 3, 4, 7, 9  # TensorType values


def schema():
    """The generated TFLite schema module (``BuiltinOperator``, ``TensorT``, ``ModelT`` ...)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def load(content: bytes):
    """The object form (``ModelT``) of a .tflite flatbuffer."""
    s = schema()
    return s.ModelT.InitFromObj(s.Model.GetRootAs(bytearray(content), 0))


def dump(model) -> bytes:
    """A ``ModelT`` back to .tflite bytes (with the 'TFL3' identifier)."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _builtin_names() -> dict[int, str]:
    """BuiltinOperator value -> name ('CONV_2D', ...)."""
    return {v: k for k, v in vars(schema().BuiltinOperator).items() if not k.startswith("_")}


def op_names(model) -> list[str]:
    """Builtin op name per operator-code index ('CONV_2D', ...)."""
    names = _builtin_names()
    return [names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "?") for c in model.operatorCodes]


def opcode_index(model, builtin: int) -> int:
    """Index of ``builtin``'s operator code in ``model``, added (version 1) when the model has none."""
    sc = schema()

    for i, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin:
            return i
    oc = sc.OperatorCodeT()
    oc.builtinCode = builtin
    oc.deprecatedBuiltinCode = min(builtin, 127)
    oc.version = 1
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1


def readers(sg, names: list[str] | None = None, ignore: tuple[str, ...] = ()) -> dict[int, list[int]]:
    """Tensor index -> indices of the operators that read it (ops named in ``ignore`` left out)."""
    out: dict[int, list[int]] = {}
    for k, op in enumerate(sg.operators):
        if ignore and names[op.opcodeIndex] in ignore:
            continue
        for i in op.inputs:
            out.setdefault(int(i), []).append(k)
    return out


def load_with_ops(content: bytes, *required: str):
    """``(model, op names)`` of ``content``, or None when one of the ``required`` ops is absent: a rewrite
    of a pattern made of those ops then returns its input as it came, without a load/dump round trip."""
    model = load(content)
    names = op_names(model)
    return (model, names) if all(r in names for r in required) else None


def subgraphs_with_readers(model):
    """Each subgraph with its readers (``readers(sg)``) and its output tensor indices; both are computed
    when the loop reaches the subgraph, so edits to earlier subgraphs are seen."""
    for sg in model.subgraphs:
        yield sg, readers(sg), {int(i) for i in sg.outputs}


def buffer_in_place(content: bytearray, buffer: int) -> np.ndarray | None:
    """A writable uint8 view of buffer ``buffer``'s bytes inside ``content`` (no copy, no re-serialization:
    editing a constant of the same size in a large model costs nothing), or None when it has no inline data."""
    b = schema().Model.GetRootAs(content, 0).Buffers(buffer)
    if b is None or b.DataLength() == 0:
        return None
    start = b._tab.Vector(b._tab.Offset(4))  # noqa: SLF001 - field 4 of Buffer is ``data``; no public offset API
    return np.frombuffer(content, np.uint8, b.DataLength(), start)


def name_of(tensor) -> str:
    n = tensor.name
    return n.decode() if isinstance(n, bytes) else str(n)


def tensor_name(sg, index: int) -> str:
    return name_of(sg.tensors[index])


def raw_data(model, tensor) -> np.ndarray | None:
    """The bytes of a constant tensor (uint8 array), or None for an activation (buffer 0 or empty)."""
    buf = model.buffers[tensor.buffer] if tensor.buffer else None
    return None if buf is None or buf.data is None or len(buf.data) == 0 else np.asarray(buf.data, np.uint8)


def tensor_like(sg, tensor, name: str, dtype: int | None = None) -> int:
    """Append an activation tensor (no buffer) with ``tensor``'s shape; returns its index."""
    sc = schema()

    new = sc.TensorT()
    new.shape = None if tensor.shape is None else np.array(tensor.shape, np.int32)
    new.shapeSignature = None if tensor.shapeSignature is None else np.array(tensor.shapeSignature, np.int32)
    new.type = tensor.type if dtype is None else dtype
    new.buffer, new.name = 0, name
    sg.tensors.append(new)
    return len(sg.tensors) - 1


def const(model, sg, index: int) -> np.ndarray | None:
    """The float32 value of a constant tensor, or None when it is not one."""
    if index < 0:
        return None
    t = sg.tensors[index]
    data = model.buffers[t.buffer].data if t.buffer < len(model.buffers) else None
    if t.type != FLOAT32 or data is None or len(data) == 0:
        return None
    return np.frombuffer(bytes(data), np.float32).reshape(list(t.shape) if t.shape is not None else [])


def int32_const(model, sg, index: int) -> np.ndarray | None:
    """The flat int32 value of a constant tensor (permutations, paddings, axes), or None when it is not one."""
    raw = raw_data(model, sg.tensors[index]) if index >= 0 else None
    return None if raw is None or sg.tensors[index].type != INT32 else np.frombuffer(raw.tobytes(), np.int32)


def new_const(model, sg, like: int, value: np.ndarray, suffix: str) -> int:
    """Append a float32 constant tensor with its own buffer (weights shared with other ops stay untouched)."""
    sc = schema()

    buf = sc.BufferT()
    buf.data = np.frombuffer(np.ascontiguousarray(value, np.float32).tobytes(), np.uint8)
    model.buffers.append(buf)
    t = copy.deepcopy(sg.tensors[like]) if like >= 0 else sc.TensorT()
    t.type = FLOAT32
    t.shape = np.array(value.shape, np.int32)
    t.buffer = len(model.buffers) - 1
    t.name = ((sg.tensors[like].name if like >= 0 else b"bias") or b"") + suffix.encode()
    sg.tensors.append(t)
    return len(sg.tensors) - 1


def drop_replaced_constants(model) -> int:
    """Empty the buffers no tensor in use points at any more (constants ``new_const`` replaced); returns how
    many. TensorFlow's MLIR quantizer drops such tensors itself, its 16x8 quantizer copies them into its
    output (float weights beside their int8 twins: twice the file)."""
    used: set[int] = set()
    for sg in model.subgraphs:
        live = {int(i) for op in sg.operators for i in list(op.inputs) + list(op.outputs)}
        live |= {int(i) for i in list(sg.inputs) + list(sg.outputs)}
        used |= {sg.tensors[i].buffer for i in live if i >= 0}
    dropped = 0
    for sg in model.subgraphs:
        for t in sg.tensors:
            b = t.buffer
            if b and b not in used and model.buffers[b].data is not None and len(model.buffers[b].data):
                model.buffers[b].data = None
                dropped += 1
    return dropped


def _name(tensor) -> str:
    """A reader-API tensor's name ('' when the optional field is absent)."""
    return (tensor.Name() or b"").decode()


def mixed_activation_ops(content: bytes) -> list[tuple[str, str, list[str]]]:
    """Ops (other than QUANTIZE/DEQUANTIZE) that read float32 and integer activations together: what a
    quantizer leaves when it keeps an op float but one producer int8. LiteRT's kernels and XNNPACK refuse them.
    Returns (op, output tensor name, names of its integer activation inputs) per such op; constants are skipped.
    Reads the flatbuffer in place (no object form): mixed-precision searches call it once per candidate."""
    s = schema()
    m = s.Model.GetRootAs(bytearray(content), 0)
    names = _builtin_names()
    codes = []
    for i in range(m.OperatorCodesLength()):
        c = m.OperatorCodes(i)
        codes.append(names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "?"))
    has_data = [m.Buffers(b).DataLength() > 0 for b in range(m.BuffersLength())]
    found = []
    for g in range(m.SubgraphsLength()):
        sg = m.Subgraphs(g)
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            if codes[op.OpcodeIndex()] in ("QUANTIZE", "DEQUANTIZE"):
                continue
            live = [int(i) for i in op.InputsAsNumpy() if i >= 0] if op.InputsLength() else []
            live = [i for i in live if not (sg.Tensors(i).Buffer() and has_data[sg.Tensors(i).Buffer()])]
            ints = [i for i in live if sg.Tensors(i).Type() in (INT8, UINT8, INT16)]
            if ints and any(sg.Tensors(i).Type() == FLOAT32 for i in live):
                out = _name(sg.Tensors(int(op.Outputs(0)))) if op.OutputsLength() else ""
                found.append((codes[op.OpcodeIndex()], out, [_name(sg.Tensors(i)) for i in ints]))
    return found
