"""ONNX ``If`` nodes that onnx2tf cannot carry into TensorFlow, replaced by straight-line graphs.

onnx2tf fails on ``If`` (silero-vad: ``KeyError: '/Constant_output_0'``; openWakeWord's verifier:
``KeyError: 'verifier_model.1.weight'``): the branches' names never reach its tensor table. Two exact
rewrites remove them:

* **fold**: a condition that depends only on tensor shapes and constants (torch.onnx writes these for
  ``if x.dim() == 3`` and batch checks) is fixed once the input shapes are; onnxruntime evaluates it and
  the taken branch is inlined.
* **select**: a data-dependent condition (a verifier run only when a first score passes a threshold)
  becomes both branches computed and ``Where(cond, then, else)`` per output; only when both branches give
  outputs of one static shape, so the select is elementwise.

Renamed branch tensors get the ``If`` node's name as prefix, so inlined names never collide. The float
check against onnxruntime on the *original* model still judges the result.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_SHAPE_OPS = {"Shape", "Size"}  # their value depends on the input's shape, not its data
_MAX_ROUNDS = 16  # inlining a branch can expose nested Ifs; each round handles the top level


@dataclass
class ControlFlowRewrite:
    """What ``remove_if_nodes`` did."""

    folded: list[str] = field(default_factory=list)
    selected: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        out = []
        if self.folded:
            out.append(f"{len(self.folded)} If node(s) with a shape-only condition folded to the branch taken "
                       "at the fixed input shapes")
        if self.selected:
            out.append(f"{len(self.selected)} data-dependent If node(s) computed on both branches and selected "
                       "with Where: " + ", ".join(self.selected[:3]))
        return out


def _branches(node):
    got = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    return got["then_branch"], got["else_branch"]


def _inline(graph, branch, prefix: str) -> tuple[list, list, list[str]]:
    """(nodes, initializers, output names) of ``branch`` with its own tensors renamed under ``prefix``."""
    import onnx

    local = {t.name for t in branch.initializer} | {o for n in branch.node for o in n.output if o}
    rename = {name: f"{prefix}/{name.lstrip('/')}" for name in local}

    def fix(g):
        for n in g.node:
            n.input[:] = [rename.get(i, i) for i in n.input]
            n.output[:] = [rename.get(o, o) for o in n.output]
            if n.name:
                n.name = f"{prefix}/{n.name.lstrip('/')}"
            for a in n.attribute:
                if a.HasField("g"):
                    fix(a.g)
                for sub in a.graphs:
                    fix(sub)

    copy = onnx.GraphProto()
    copy.CopyFrom(branch)
    fix(copy)
    inits = []
    for t in copy.initializer:
        t.name = rename[t.name]
        inits.append(t)
    return list(copy.node), inits, [rename.get(o.name, o.name) for o in copy.output]


def _depends_on_data(graph, tensor: str) -> bool:
    """Whether ``tensor``'s value can reach back to a graph input other than through Shape/Size."""
    producer = {o: n for n in graph.node for o in n.output}
    inputs = {v.name for v in graph.input} - {t.name for t in graph.initializer}
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in inputs:
            return True
        n = producer.get(t)
        if n is None or n.op_type in _SHAPE_OPS:
            continue
        if n.op_type in ("If", "Loop", "Scan"):
            return True  # its value may come from data inside a branch
        stack.extend(i for i in n.input if i)
    return False


def _evaluate(model, names: list[str], feeds_list: list[dict]) -> list[list[np.ndarray]] | None:
    """Values of the boolean tensors ``names`` for each feed dict, or None if onnxruntime cannot run it."""
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    for n in names:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.BOOL, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    # onnxruntime 1.26's own constant folding of these Ifs fails at session start once shapes are static
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return [sess.run(names, feeds) for feeds in feeds_list]
    except Exception:  # noqa: BLE001 - not evaluable: leave the If nodes to onnx2tf
        return None


def _replace(graph, node, new_nodes, new_inits) -> None:
    nodes = list(graph.node)
    i = nodes.index(node)
    del graph.node[:]
    graph.node.extend(nodes[:i] + new_nodes + nodes[i + 1:])
    graph.initializer.extend(new_inits)


def _static_shapes(model) -> dict[str, tuple]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - no shapes: the select rewrite will not apply
        return {}
    out = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            out[v.name] = tuple(d.dim_value for d in dims)
    return out


def remove_if_nodes(model, feeds_list: list[dict[str, np.ndarray]]) -> ControlFlowRewrite:
    """Fold or select-lower (in place) the top-level ``If`` nodes of ``model``, whose inputs must have their
    static shapes; ``feeds_list`` are sample inputs of those shapes (two differing ones: a condition must
    agree on both to be folded)."""
    import onnx
    from onnx import helper

    done = ControlFlowRewrite()
    for _ in range(_MAX_ROUNDS):
        g = model.graph
        ifs = [n for n in g.node if n.op_type == "If"]
        if not ifs:
            break
        changed = False
        shape_only = [n for n in ifs if not _depends_on_data(g, n.input[0])]
        values = _evaluate(model, [n.input[0] for n in shape_only], feeds_list) if shape_only else None
        for k, node in enumerate(shape_only if values else []):
            taken = {bool(np.asarray(v[k]).reshape(-1)[0]) for v in values}
            if len(taken) != 1:
                continue
            then_g, else_g = _branches(node)
            prefix = node.name or f"If_{k}"
            nodes, inits, outs = _inline(g, then_g if taken.pop() else else_g, prefix)
            nodes += [helper.make_node("Identity", [o], [t], name=f"{prefix}/out{j}")
                      for j, (o, t) in enumerate(zip(outs, node.output))]
            _replace(g, node, nodes, inits)
            done.folded.append(node.name)
            changed = True
        if changed:
            continue
        for node in [n for n in g.node if n.op_type == "If"]:
            then_g, else_g = _branches(node)
            prefix = node.name or "If"
            t_nodes, t_inits, t_outs = _inline(g, then_g, f"{prefix}/then")
            e_nodes, e_inits, e_outs = _inline(g, else_g, f"{prefix}/else")
            trial = onnx.ModelProto()
            trial.CopyFrom(model)
            trial_node = next(n for n in trial.graph.node if n.name == node.name and n.op_type == "If")
            _replace(trial.graph, trial_node, t_nodes + e_nodes, t_inits + e_inits)
            shapes = _static_shapes(trial)
            pairs = list(zip(t_outs, e_outs))
            if not all(shapes.get(a) is not None and shapes.get(a) == shapes.get(b) for a, b in pairs):
                continue
            where = [helper.make_node("Where", [node.input[0], a, b], [out], name=f"{prefix}/select{j}")
                     for j, ((a, b), out) in enumerate(zip(pairs, node.output))]
            _replace(g, node, t_nodes + e_nodes + where, t_inits + e_inits)
            done.selected.append(node.name)
            changed = True
            break
        if not changed:
            break
    done.left = [n.name for n in model.graph.node if n.op_type == "If"]
    return done
