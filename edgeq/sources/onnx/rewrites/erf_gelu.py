"""ONNX graph rewrites applied before onnx2tf, so the float graph lowers to LiteRT builtin ops only.

PyTorch exports exact GELU as ``Mul(Mul(x, Add(Erf(Div(x, sqrt2)), 1)), 0.5)``. onnx2tf turns that into
TF ops in the same order, and TFLiteConverter's GELU fusion does not match this order, so ``Erf`` is
left over and becomes a Flex op (FlexErf) that phones cannot run. The converter *does* fuse
``(x * 0.5) * (1 + erf(x / sqrt2))`` into the builtin GELU op; we reorder the two multiplications to
that form. The arithmetic is the same (exact GELU), only the association of the products changes.

Erf nodes outside that pattern are left to onnx2tf's polynomial ``erf`` (builtin ABS/EXP/MUL/...);
the caller is told how many there were.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SQRT2 = float(np.sqrt(2.0))


@dataclass(frozen=True)
class RewriteResult:
    """How many Erf-GELU patterns were reordered, and how many Erf nodes remain outside them."""

    gelu: int
    other_erf: int


def _const_value(graph, name: str, producers: dict) -> float | None:
    """The scalar value of ``name`` if it is an initializer or a Constant node output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            a = numpy_helper.to_array(init)
            return float(a.reshape(-1)[0]) if a.size == 1 else None
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                a = numpy_helper.to_array(attr.t)
                return float(a.reshape(-1)[0]) if a.size == 1 else None
            if attr.name == "value_float":
                return float(attr.f)
    return None


def _other_input(node, name: str) -> str | None:
    """For a binary node with ``name`` as one input: the other input (None if not binary)."""
    ins = list(node.input)
    if len(ins) != 2 or name not in ins:
        return None
    return ins[1] if ins[0] == name else ins[0]


def reorder_erf_gelu(model) -> RewriteResult:
    """Rewrite every PyTorch-style Erf-GELU in ``model`` (in place) into the form LiteRT fuses to GELU."""
    import onnx

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    close = lambda v, want: v is not None and abs(v - want) < 1e-3 * max(1.0, abs(want))  # noqa: E731
    done = other = 0
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producers.get(erf.input[0])
        users = consumers.get(erf.output[0], [])
        if div is None or len(users) != 1:
            other += 1
            continue
        x = div.input[0]
        scale = _const_value(graph, div.input[1], producers) if len(div.input) == 2 else None
        ok_div = (div.op_type == "Div" and close(scale, SQRT2)) or (div.op_type == "Mul" and close(scale, 1 / SQRT2))
        add = users[0]
        one = _const_value(graph, _other_input(add, erf.output[0]) or "", producers)
        add_users = consumers.get(add.output[0], [])
        mul1 = add_users[0] if len(add_users) == 1 else None
        mul1_users = consumers.get(mul1.output[0], []) if mul1 is not None else []
        graph_outputs = {o.name for o in graph.output}
        mul2 = mul1_users[0] if len(mul1_users) == 1 and mul1.output[0] not in graph_outputs else None
        half_in = _other_input(mul2, mul1.output[0]) if mul2 is not None else None
        if not (ok_div and add.op_type == "Add" and close(one, 1.0) and mul1 is not None
                and mul1.op_type == "Mul" and _other_input(mul1, add.output[0]) == x and mul2 is not None
                and mul2.op_type == "Mul" and close(_const_value(graph, half_in or "", producers), 0.5)):
            other += 1
            continue
        # mul1: x * (1 + erf)  ->  x * 0.5 ;  mul2: (that) * 0.5  ->  (x * 0.5) * (1 + erf)
        half_name = f"{mul1.name or 'gelu'}_x_half"
        mul1.ClearField("input")
        mul1.input.extend([x, half_in])
        mul1.output[0] = half_name
        mul2.ClearField("input")
        mul2.input.extend([half_name, add.output[0]])
        done += 1
    if done:
        _toposort(graph)  # the 0.5 constant may have been defined after the first Mul
        onnx.checker.check_model(model)
    return RewriteResult(gelu=done, other_erf=other)


def _toposort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in available for i in n.input):
                ordered.append(n)
                available.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):  # a cycle or a dangling input: leave the graph for the checker
            ordered += rest
            break
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
