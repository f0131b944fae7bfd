"""Cross-layer equalization (Nagel et al. 2019): balance per-channel weight ranges of consecutive layers.

For ``L1 -> (ReLU | pooling | identity)* -> L2``, output channel c of L1 is divided by s_c and input
channel c of L2 multiplied by s_c, with s_c = sqrt(r1_c / r2_c) so both ranges become sqrt(r1_c r2_c).
ReLU and pooling commute with positive scales, so the float function is unchanged. A clipping ReLU
(ReLU6) does not commute: a channel whose calibration values reach the clip keeps s_c = 1, and the
others are scaled only as far as their calibration maximum stays below the clip.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.quantize.prepare.graph import CONV_LIKE, Graph, activations
from edgeq.quantize.prepare.step import KerasStep

TRANSPARENT = ("Identity", "Dropout", "GlobalAveragePooling2D", "MaxPooling2D", "AveragePooling2D",
               "ZeroPadding2D", "ReLU", "Activation")


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    clip: float | None  # the smallest ReLU max_value between them, if any


def _relu_clip(g: Graph, name: str) -> tuple[bool, float | None]:
    """(commutes with positive per-channel scales, clip value) for a layer between the pair."""
    cls, cfg = g.classes[name], g.layer_config(name)
    if cls == "ReLU":
        if cfg.get("negative_slope", 0.0) or cfg.get("threshold", 0.0):
            return False, None
        return True, cfg.get("max_value")
    if cls == "Activation":
        act = cfg.get("activation")
        return (act in ("relu", "linear", "relu6")), (6.0 if act == "relu6" else None)
    return True, None  # identity, dropout, pooling, padding: positively homogeneous per channel


def find_pairs(g: Graph) -> list[Pair]:
    """Every L1 -> L2 chain whose intermediate tensors have exactly one reader."""
    pairs = []
    for name, cls in g.classes.items():
        if cls not in CONV_LIKE:
            continue
        act = g.layer_config(name).get("activation", "linear")
        if act not in ("linear", "relu", "relu6"):
            continue
        clips = [6.0] if act == "relu6" else []
        cur = name
        while True:
            nxt = g.sole_consumer(cur)
            if nxt is None:
                break
            if g.classes[nxt] in CONV_LIKE:
                if g.classes[nxt] == "Dense" and g.classes[cur] not in ("GlobalAveragePooling2D", *CONV_LIKE):
                    break
                pairs.append(Pair(name, nxt, min(clips) if clips else None))
                break
            if g.classes[nxt] not in TRANSPARENT:
                break
            ok, clip = _relu_clip(g, nxt)
            if not ok:
                break
            if clip is not None:
                clips.append(float(clip))
            cur = nxt
    return pairs


def _out_ranges(kind: str, kernel: np.ndarray) -> np.ndarray:
    if kind == "DepthwiseConv2D":
        kh, kw, cin, mult = kernel.shape
        return np.abs(kernel).reshape(-1, cin * mult).max(0)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0)


def _in_ranges(kind: str, kernel: np.ndarray) -> np.ndarray:
    if kind == "Dense":
        return np.abs(kernel).max(1)
    return np.abs(kernel).transpose(2, 0, 1, 3).reshape(kernel.shape[2], -1).max(1)


def _scale_out(kind: str, weights: list[np.ndarray], s: np.ndarray) -> list[np.ndarray]:
    kernel = weights[0]
    if kind == "DepthwiseConv2D":
        kernel = kernel / s.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel / s
    return [kernel] + ([weights[1] / s] if len(weights) > 1 else [])


def _scale_in(kind: str, weights: list[np.ndarray], s: np.ndarray) -> list[np.ndarray]:
    kernel = weights[0]
    kernel = kernel * (s[:, None] if kind == "Dense" else s[None, None, :, None])
    return [kernel] + weights[1:]


def equalize(model, calib_x: np.ndarray, iterations: int = 20, pairs: list[Pair] | None = None) -> tuple[object, int]:
    """Equalize ``model`` in place (weights only); returns (model, number of pairs equalized)."""
    g = Graph.of(model)
    pairs = find_pairs(g) if pairs is None else pairs
    if not pairs:
        return model, 0
    clipped = [p for p in pairs if p.clip is not None]
    peaks = activations(model, [p.first for p in clipped], calib_x) if clipped else {}
    peaks = {k: v.reshape(-1, v.shape[-1]).max(0) for k, v in peaks.items()}
    w = {n: [np.asarray(a, np.float64) for a in model.get_layer(n).get_weights()]
         for p in pairs for n in (p.first, p.second)}
    factor = {p.first: 1.0 for p in pairs}  # total scale applied to each L1's outputs so far
    for _ in range(iterations):
        worst = 0.0
        for p in pairs:
            k1, k2 = g.classes[p.first], g.classes[p.second]
            r1, r2 = _out_ranges(k1, w[p.first][0]), _in_ranges(k2, w[p.second][0])
            if len(r1) != len(r2):
                continue
            ok = (r1 > 1e-12) & (r2 > 1e-12)
            s = np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)
            if p.clip is not None:  # keep ReLU6 exact on the calibration data
                peak = peaks[p.first] * factor[p.first]
                s = np.where(peaks[p.first] >= p.clip, 1.0, np.maximum(s, peak / p.clip))
            s = np.clip(s, 1e-4, 1e4)
            factor[p.first] = factor[p.first] / s
            w[p.first] = _scale_out(k1, w[p.first], s)
            w[p.second] = _scale_in(k2, w[p.second], s)
            worst = max(worst, float(np.abs(np.log(s)).max()))
        if worst < 1e-3:
            break
    for name, ws in w.items():
        model.get_layer(name).set_weights([a.astype(np.float32) for a in ws])
    return model, len(pairs)


# Cross-layer equalization on the Keras graph (a PTQ step, see ``step.py``).
EQUALIZE_STEP = KerasStep("equalize", equalize, "cross-layer equalization of {n} layer pairs")
