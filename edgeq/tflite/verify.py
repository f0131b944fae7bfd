"""Check a .tflite flatbuffer's structure before LiteRT touches it.

The Python interpreter wrapper builds models without the flatbuffer verifier, so a truncated or
scrambled file crashes the process (SIGSEGV) instead of raising. No verifier is exposed by the installed
packages, so this walks the whole flatbuffer with the schema's generated reader (every out-of-range read
raises in Python instead of crashing) and then checks what the runtime trusts: buffer, tensor, operator
code and subgraph indices, external buffer offsets, constant sizes, and names it decodes as UTF-8.
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from edgeq.errors import ModelLoadError, first_line

_MAX_DIMS = 16  # more dimensions than any kernel takes: a damaged shape vector


def _schema():
    from ai_edge_litert import schema_py_generated as schema  # the one schema the runtime ships

    return schema


def _fail(where: str, why: str) -> ModelLoadError:
    return ModelLoadError(f"{where}: corrupt TFLite model ({why}); convert it again or copy the file again")


def verify_tflite(path: Path | None = None, content: bytes | None = None) -> None:
    """Raise :class:`ModelLoadError` naming the file when ``path`` (or ``content``) is not a sound TFLite
    flatbuffer; return quietly otherwise. Cheap: one pass over the graph, buffers are not copied."""
    where = str(path) if path is not None else "<model bytes>"
    if content is None:
        content = read_model(Path(path))
    buf = bytes(content) if not isinstance(content, (bytes, bytearray)) else content
    if len(buf) == 0:
        raise ModelLoadError(f"{where}: file is empty; convert the model again")
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ModelLoadError(f"{where}: not a TFLite flatbuffer (no 'TFL3' identifier); give a .tflite file")
    (root,) = struct.unpack_from("<I", buf, 0)
    if root + 4 > len(buf):
        raise _fail(where, f"root table offset {root} beyond the file's {len(buf)} bytes; truncated?")
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(buf, 0)
    except Exception as exc:  # struct.error, IndexError, UnicodeDecodeError ... from out-of-range offsets
        why = ("an offset points past the end of the file: truncated or damaged"
               if isinstance(exc, (struct.error, IndexError)) else f"unreadable flatbuffer: {first_line(exc)[:80]}")
        raise _fail(where, why) from None
    _check_model(model, len(buf), where, schema)


def read_model(path: Path) -> bytes:
    """The bytes of a model file, with one-line errors for a missing file, a folder or a device/FIFO."""
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file; give a .tflite model")
    if path.is_dir():
        raise ModelLoadError(f"{path}: is a folder, not a .tflite file; give the model file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file (a device, FIFO or socket); give a .tflite file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read it ({exc.strerror}); check the path and permissions") from None


def _check_model(m, size: int, where: str, schema) -> None:
    if m.version != 3:
        raise _fail(where, f"schema version {m.version}, expected 3")
    buffers = m.buffers or []
    codes = m.operatorCodes or []
    subgraphs = m.subgraphs or []
    if not subgraphs:
        raise _fail(where, "no subgraphs")
    max_type = max(v for k, v in vars(schema.TensorType).items() if not k.startswith("_"))
    max_op = max(v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_"))
    for i, b in enumerate(buffers):
        if b.offset > 1 and (b.offset + b.size > size):
            raise _fail(where, f"buffer {i} lies at bytes {b.offset}..{b.offset + b.size}, beyond the file's {size}")
    for i, c in enumerate(codes):
        code = max(c.builtinCode, c.deprecatedBuiltinCode)
        if not 0 <= code <= max_op:
            raise ModelLoadError(f"{where}: operator code {i} is builtin op {code}, unknown to the installed LiteRT; "
                                 "the file is damaged or from a newer converter: convert it again")
    _check_names(m, where)
    for s, sg in enumerate(subgraphs):
        tensors = sg.tensors or []
        nt = len(tensors)
        for t, tensor in enumerate(tensors):
            name = f"subgraph {s} tensor {t}"
            if not 0 <= tensor.buffer < max(len(buffers), 1):
                raise _fail(where, f"{name} refers to buffer {tensor.buffer} of {len(buffers)}")
            if not 0 <= tensor.type <= max_type:
                raise _fail(where, f"{name} has unknown type {tensor.type}")
            shape = _ints(tensor.shape)
            if len(shape) > _MAX_DIMS or any(d < 0 for d in shape):
                raise _fail(where, f"{name} has shape {shape}")
            _check_constant(tensor, buffers, name, where)
        for what, idx in (("input", sg.inputs), ("output", sg.outputs)):
            for i in _ints(idx):
                if not 0 <= i < nt:
                    raise _fail(where, f"subgraph {s} {what} tensor {i} of {nt}")
        for k, op in enumerate(sg.operators or []):
            name = f"subgraph {s} op {k}"
            if not 0 <= op.opcodeIndex < len(codes):
                raise _fail(where, f"{name} refers to operator code {op.opcodeIndex} of {len(codes)}")
            for i in _ints(op.inputs) + _ints(op.outputs) + _ints(op.intermediates):
                if not -1 <= i < nt:
                    raise _fail(where, f"{name} refers to tensor {i} of {nt}")
            for attr, value in getattr(op.builtinOptions, "__dict__", {}).items():
                if "subgraph" in attr.lower() and isinstance(value, int) and not 0 <= value < len(subgraphs):
                    raise _fail(where, f"{name} calls subgraph {value} of {len(subgraphs)}")
    for sig in m.signatureDefs or []:
        if not 0 <= sig.subgraphIndex < len(subgraphs):
            raise _fail(where, f"signature refers to subgraph {sig.subgraphIndex} of {len(subgraphs)}")
        nt = len(subgraphs[sig.subgraphIndex].tensors or [])
        for tm in (sig.inputs or []) + (sig.outputs or []):
            if not 0 <= tm.tensorIndex < nt:
                raise _fail(where, f"signature tensor {tm.tensorIndex} of {nt}")
    for md in m.metadata or []:
        if not 0 <= md.buffer < len(buffers):
            raise _fail(where, f"metadata refers to buffer {md.buffer} of {len(buffers)}")


# TensorType -> bytes per element (strings, resources, variants and packed int4/int2 are not checked).
def _check_names(m, where: str) -> None:
    """The runtime's Python API decodes these as UTF-8; a damaged byte would surface as UnicodeDecodeError."""
    names = [sg.name for sg in m.subgraphs or []] + [t.name for sg in m.subgraphs or [] for t in sg.tensors or []]
    names += [c.customCode for c in m.operatorCodes or []] + [md.name for md in m.metadata or []]
    for sig in m.signatureDefs or []:
        names += [sig.signatureKey] + [tm.name for tm in (sig.inputs or []) + (sig.outputs or [])]
    for n in names:
        if isinstance(n, bytes):
            try:
                n.decode("utf-8")
            except UnicodeDecodeError:
                raise _fail(where, f"name {n[:40]!r} is not UTF-8") from None


_ITEMSIZE = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8, 15: 4, 16: 2, 18: 2}


def _check_constant(tensor, buffers, name: str, where: str) -> None:
    """A constant's data must hold exactly its shape's bytes (sparse, packed int4 and strings aside)."""
    if tensor.sparsity is not None or tensor.buffer <= 0 or tensor.buffer >= len(buffers):
        return
    b = buffers[tensor.buffer]
    have = len(b.data) if b.data is not None else (b.size if b.offset > 1 else 0)
    itemsize = _ITEMSIZE.get(tensor.type)
    if have == 0 or itemsize is None:
        return
    need = int(np.prod(_ints(tensor.shape), dtype=np.int64)) * itemsize
    if have != need:
        raise _fail(where, f"{name} needs {need} bytes of data but its buffer holds {have}")


def _ints(v) -> list[int]:
    if v is None or isinstance(v, int):
        return []
    return [int(x) for x in v]
