"""ONNX rewrites for modes with quantized activations (int8, int8-fallback, int16x8, mixed).

Two parts of a PyTorch-exported transformer encoder cannot be quantized as exported:

* **Exact GELU.** onnx2tf's direct backend lowers ``Erf`` to a polynomial with ``SIGN``, which has no
  integer kernel in LiteRT, so full INT8 is impossible. ``erf(x/sqrt2)`` is replaced by the standard
  tanh form ``tanh(sqrt(2/pi) * (x + 0.044715 x^3))`` (the original BERT GELU): MUL/ADD/TANH, all with
  int8 kernels. It differs from exact GELU by at most ~3e-4 per activation; the fidelity check
  measures the whole float model against onnxruntime on the *original* graph.
* **Additive attention mask.** PyTorch/HF add ``-1e4`` or ``float32 min`` to masked attention scores.
  Calibration then sees a range of [-1e4, +10] (or [-3.4e38, ...]) for the score tensor, the int8 step
  becomes ~40, every real score rounds to the same value and attention turns uniform (tiny_encoder:
  cosine 0.878 vs onnxruntime). Such a constant is set to ``MASK_VALUE`` (-64): exp(-64) ~ 1.6e-28, so a
  masked token's softmax weight stays negligible, and the score tensor's range becomes quantizable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.sources.onnx.rewrites.erf_gelu import SQRT2, _const_value

MASK_VALUE = -64.0
_BIG_NEGATIVE = -1e3  # constants at or below this that feed a Softmax are mask biases
_HOPS = 6  # how far below the constant the Softmax may be (Where/Mul -> Expand/Cast -> Add -> Softmax)


@dataclass(frozen=True)
class QuantRewrite:
    """How many Erf(x/sqrt2) became tanh-GELU, and how many mask constants were clamped."""

    tanh_gelu: int
    mask_constants: int

    def notes(self) -> list[str]:
        out = []
        if self.tanh_gelu:
            out.append(f"{self.tanh_gelu} exact GELU(s) use the tanh form for integer kernels "
                       "(LiteRT's SIGN from erf has none; <= ~3e-4 per activation)")
        if self.mask_constants:
            out.append(f"{self.mask_constants} attention-mask constant(s) clamped to {MASK_VALUE:g} so the "
                       f"masked score tensor can be quantized (exp({MASK_VALUE:g}) is ~0)")
        return out


def rewrite_for_quantization(model) -> QuantRewrite:
    """Apply both rewrites to ``model`` in place."""
    return QuantRewrite(tanh_gelu=_tanh_gelu(model), mask_constants=_clamp_mask_constants(model))


def _tanh_gelu(model) -> int:
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    close = lambda v, want: v is not None and abs(v - want) < 1e-3 * max(1.0, abs(want))  # noqa: E731
    done = 0
    for erf in [n for n in graph.node if n.op_type == "Erf"]:
        div = producers.get(erf.input[0])
        if div is None or len(div.input) != 2:
            continue
        scale = _const_value(graph, div.input[1], producers)
        if not ((div.op_type == "Div" and close(scale, SQRT2)) or (div.op_type == "Mul" and close(scale, 1 / SQRT2))):
            continue
        x, p = div.input[0], f"{erf.name or 'erf'}_tanh{done}_"
        graph.initializer.extend([numpy_helper.from_array(np.array(0.044715, np.float32), p + "a"),
                                  numpy_helper.from_array(np.array(np.sqrt(2 / np.pi), np.float32), p + "c")])
        nodes = [helper.make_node("Mul", [x, x], [p + "x2"]), helper.make_node("Mul", [p + "x2", x], [p + "x3"]),
                 helper.make_node("Mul", [p + "x3", p + "a"], [p + "ax3"]),
                 helper.make_node("Add", [x, p + "ax3"], [p + "inner"]),
                 helper.make_node("Mul", [p + "inner", p + "c"], [p + "arg"]),
                 helper.make_node("Tanh", [p + "arg"], [erf.output[0]])]
        at = list(graph.node).index(erf)
        graph.node.remove(erf)
        for k, n in enumerate(nodes):
            graph.node.insert(at + k, n)
        done += 1
    return done


def _reaches_softmax(name: str, consumers: dict) -> bool:
    frontier = [name]
    for _ in range(_HOPS):
        nxt = []
        for t in frontier:
            for n in consumers.get(t, []):
                if n.op_type == "Softmax":
                    return True
                nxt.extend(n.output)
        frontier = nxt
    return False


def _clamp_mask_constants(model) -> int:
    from onnx import numpy_helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def big_negative(a) -> bool:
        return a.size == 1 and a.dtype.kind == "f" and float(a.reshape(-1)[0]) <= _BIG_NEGATIVE

    done = 0
    for init in graph.initializer:
        a = numpy_helper.to_array(init)
        if big_negative(a) and _reaches_softmax(init.name, consumers):
            init.CopyFrom(numpy_helper.from_array(np.full(a.shape, MASK_VALUE, a.dtype), init.name))
            done += 1
    for n in graph.node:
        if n.op_type != "Constant" or not _reaches_softmax(n.output[0], consumers):
            continue
        for attr in n.attribute:
            if attr.name == "value" and big_negative(numpy_helper.to_array(attr.t)):
                a = numpy_helper.to_array(attr.t)
                attr.t.CopyFrom(numpy_helper.from_array(np.full(a.shape, MASK_VALUE, a.dtype), attr.t.name))
                done += 1
    return done
