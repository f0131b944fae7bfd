"""Inputs without a leading batch axis (a recurrent state ``[2, batch, 128]``, a scalar sample rate) get one.

edgeq's data and runtime put samples on axis 0 of every input and output (a ``.npz`` of ``[n, ...]`` arrays,
fed one batch-1 row at a time). Stateful exports break that: silero-vad takes ``state[2, batch, 128]`` and a
scalar ``sr``. Lifting such an input to ``[1, *shape]`` with a ``Squeeze`` behind it keeps the graph exact and
gives the TFLite model the leading batch axis of 1 every other input has. The lifted ONNX model is also the
float reference. Outputs stay as exported (``stateN[2, 1, 128]``): an ``Unsqueeze`` there made onnx2tf
lower silero-vad's LSTM to a CUSTOM op it cannot export.
"""
from __future__ import annotations

from edgeq.sources.base import TensorSpec

SUFFIX = "__edgeq_unbatched"


def needs_lift(declared: TensorSpec) -> bool:
    """A scalar, or a fixed first dim with a dynamic dim behind it (the batch is not axis 0)."""
    shape = declared.shape
    return len(shape) == 0 or (shape[0] is not None and any(d is None for d in shape[1:]))


def _axes_const(model, name: str):
    from onnx import helper, numpy_helper
    import numpy as np

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=13)
    if opset >= 13:
        model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), name))
        return lambda op, src, dst: helper.make_node(op, [src, name], [dst], name=f"{dst}/{op}")
    return lambda op, src, dst: helper.make_node(op, [src], [dst], name=f"{dst}/{op}", axes=[0])


def lift_inputs(model, declared: list[TensorSpec], fixed: list[TensorSpec]) -> tuple[list[TensorSpec], list[str]]:
    """Lift (in place) the inputs ``needs_lift`` names; returns the fixed input specs with lifted shapes and
    the lifted input names (empty: model unchanged)."""
    lift = {d.name for d in declared if needs_lift(d)}
    if not lift:
        return fixed, []
    make = _axes_const(model, f"edgeq_axis0{SUFFIX}")
    g = model.graph
    new_nodes = []
    for v in g.input:
        if v.name in lift:
            inner = v.name + SUFFIX
            _rename_uses(g, v.name, inner)
            new_nodes.append(make("Squeeze", v.name, inner))
    specs = [TensorSpec(s.name, (1, *s.shape), s.dtype) if s.name in lift else s for s in fixed]
    for v, s in zip(g.input, specs):
        if v.name in lift:
            dims = v.type.tensor_type.shape
            dims.ClearField("dim")
            for d in s.shape:
                dims.dim.add().dim_value = int(d)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(new_nodes + nodes)
    return specs, sorted(lift)


def _rename_uses(graph, old: str, new: str) -> None:
    """Point every use of ``old`` at ``new``, inside If/Loop branches too (they read outer tensors by name)."""
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        for a in n.attribute:
            if a.HasField("g"):
                _rename_uses(a.g, old, new)
            for sub in a.graphs:
                _rename_uses(sub, old, new)
