"""Bias absorption (Nagel et al. 2019): move the part of a channel's offset that ReLU never cuts into the next layer.

Equalization can leave channels with large positive biases, which widen the per-tensor activation range.
If channel c of L1's output is at least m_c >= 0 on every calibration sample, then
ReLU(y - m_c) = ReLU(y) - m_c there, so m_c is subtracted from L1's bias and added back through L2's
weights (b2 += W2 m). Only unclipped ReLU chains into 1x1 convs or dense layers qualify: ReLU6 does not
commute with the shift, and a zero-padded kxk conv would see the shift at its borders.
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.equalize import find_pairs
from edgeq.quantize.prepare.graph import Graph, activations
from edgeq.quantize.prepare.step import KerasStep


def _qualifies(g: Graph, first: str, second: str) -> bool:
    cfg1, cfg2 = g.layer_config(first), g.layer_config(second)
    if not cfg1.get("use_bias") or not cfg2.get("use_bias"):
        return False
    if g.classes[second] == "Dense":
        return True
    return g.classes[second] == "Conv2D" and tuple(cfg2.get("kernel_size", (0,))) == (1, 1)


def absorb_biases(model, calib_x: np.ndarray) -> tuple[object, int]:
    """Absorb biases in place for every qualifying pair; returns (model, number of pairs changed)."""
    g = Graph.of(model)
    pairs = [p for p in find_pairs(g) if p.clip is None and _qualifies(g, p.first, p.second)]
    if not pairs:
        return model, 0
    lows = activations(model, [p.first for p in pairs], calib_x)
    changed = 0
    for p in pairs:
        m = np.maximum(lows[p.first].reshape(-1, lows[p.first].shape[-1]).min(0), 0.0)
        if not np.any(m > 0):
            continue
        k1, b1 = [np.asarray(a) for a in model.get_layer(p.first).get_weights()]
        k2, b2 = [np.asarray(a) for a in model.get_layer(p.second).get_weights()]
        w2 = k2 if g.classes[p.second] == "Dense" else k2[0, 0]
        model.get_layer(p.first).set_weights([k1, (b1 - m).astype(np.float32)])
        model.get_layer(p.second).set_weights([k2, (b2 + m @ w2).astype(np.float32)])
        changed += 1
    return model, changed


# Bias absorption into the following layers (a PTQ step, see ``step.py``).
BIAS_ABSORB_STEP = KerasStep("bias_absorb", absorb_biases, "bias absorption into {n} following layers")
