"""``Clip(x, min=c > 0, max=+inf)`` written as ``Relu(x - c) + c``.

A log-mel front end guards its ``Log`` with ``Clip(power, 1e-10, inf)`` (openWakeWord's melspectrogram).
onnx2tf 2.6.9 lowers that Clip like a ReLU, losing the floor: on quiet audio the float TFLite gives
``log(0)`` where onnxruntime gives ``log(1e-10)`` (-110.9 vs -100.0 dB, cosine 0.997). It does the same to
``Max(x, 1e-10)``. ``Relu(x - c) + c`` is the same function (to one rounding of x) and keeps the floor.
``Clip(x, 0, inf)`` is left alone: onnx2tf fuses that ReLU into the conv before it.
"""
from __future__ import annotations

import numpy as np


def _constant(model, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output and n.output[0] == name:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def clip_floors_to_max(model) -> int:
    """Rewrite (in place) every open-topped Clip with a positive constant floor; returns how many."""
    from onnx import helper

    replaced = []
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Clip" or len(node.input) < 2 or not node.input[1]:
            continue
        low = _constant(model, node.input[1])
        high = _constant(model, node.input[2]) if len(node.input) > 2 and node.input[2] else None
        open_top = high is None if not (len(node.input) > 2 and node.input[2]) else (
            high is not None and high.size == 1 and np.isposinf(high).all())
        if low is None or low.size != 1 or not open_top or not float(low.reshape(-1)[0]) > 0:
            continue
        base = (node.name or f"Clip_{i}") + "/floor"
        replaced.append((node, [
            helper.make_node("Sub", [node.input[0], node.input[1]], [base + "/shifted"], name=base + "/sub"),
            helper.make_node("Relu", [base + "/shifted"], [base + "/relu"], name=base + "/relu"),
            helper.make_node("Add", [base + "/relu", node.input[1]], list(node.output), name=base + "/add")]))
    for node, new in replaced:
        nodes = list(model.graph.node)
        k = nodes.index(node)
        del model.graph.node[:]
        model.graph.node.extend(nodes[:k] + new + nodes[k + 1:])
    return len(replaced)
