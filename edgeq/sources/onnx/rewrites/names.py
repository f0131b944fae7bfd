"""Node and tensor names that onnx2tf can carry into TensorFlow.

onnx2tf names TF ops after ONNX tensors and nodes, and TensorFlow refuses scope names outside
``[A-Za-z0-9_.\\/>-]``. Exporters do not care: paddle2onnx writes
tensors such as ``Softmax@0`` and leaves node names empty. Renaming is safe because ONNX binds tensors
by name only inside the graph; graph inputs and outputs are renamed too, and the caller gets the map so
``--input-shape`` and the onnxruntime reference (which runs the original file) keep the user's names.
"""
from __future__ import annotations

import re

# Characters TF scope names allow. A leading '/' (every torch.onnx export has '/model/conv/Conv_output_0')
# is not one TF allows first, but onnx2tf strips it itself: renaming those would break what works.
_VALID = re.compile(r"^[A-Za-z0-9_.\\/>-]*$")
_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.\\/>-]")


def _clean(name: str) -> str:
    return _BAD_CHAR.sub("_", name)


def _subgraphs(graph):
    """The graph and every graph nested in If/Loop/Scan attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g is not None and attr.HasField("g"):
                yield from _subgraphs(attr.g)
            for g in attr.graphs:
                yield from _subgraphs(g)


def sanitize_names(model) -> dict[str, str]:
    """Rename (in place) every tensor and node whose name TensorFlow would refuse; returns old -> new for
    the graph's inputs and outputs that changed. Empty node names become ``<OpType>_<index>``."""
    used: set[str] = set()
    tensors: set[str] = set()
    for g in _subgraphs(model.graph):
        for v in list(g.input) + list(g.output) + list(g.value_info):
            tensors.add(v.name)
        for init in g.initializer:
            tensors.add(init.name)
        for n in g.node:
            tensors.update(x for x in n.input if x)
            tensors.update(x for x in n.output if x)
    used.update(t for t in tensors if _VALID.match(t))
    rename: dict[str, str] = {}
    for t in sorted(tensors):
        if _VALID.match(t):
            continue
        base, new, k = _clean(t), _clean(t), 0
        while new in used:
            k += 1
            new = f"{base}_{k}"
        used.add(new)
        rename[t] = new
    node_names: set[str] = set()
    for g in _subgraphs(model.graph):
        for i, n in enumerate(g.node):
            n.input[:] = [rename.get(x, x) for x in n.input]
            n.output[:] = [rename.get(x, x) for x in n.output]
            name = _clean(n.name) if n.name else f"{n.op_type}_{i}"
            base, k = name, 0
            while name in node_names:
                k += 1
                name = f"{base}_{k}"
            node_names.add(name)
            n.name = name
        for v in list(g.input) + list(g.output) + list(g.value_info):
            v.name = rename.get(v.name, v.name)
        for init in g.initializer:
            init.name = rename.get(init.name, init.name)
    io = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    return {old: new for old, new in rename.items() if new in io}
