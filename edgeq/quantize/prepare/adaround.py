"""Learned weight rounding (AdaRound, Nagel et al. 2020): the pieces ``sequential_rounding`` fits layers with.

The converter rounds each int8 weight to the nearest step of its per-channel grid (scale = max|w|/127).
Nearest is best per weight, not per layer output. For a conv, depthwise or dense layer, ``learn_rounding``
chooses per weight floor or ceil so that the layer's *output* error on calibration inputs is smallest:

    min over h in {0,1}:  E || W x_f - s (floor(W/s) + h) x_q ||^2

with x_f the float model's input to the layer and x_q the INT8 model's. The loss is quadratic in the
weights, so it needs only E[x_q x_q^T] and E[x_q (x_f - x_q)^T] (``Stats``). h is relaxed to a rectified
sigmoid and annealed to 0/1 (AdaRound's regularizer) with Adam in numpy.

The largest weight of every channel keeps its nearest integer (``_keep_grid``), so the quantizer
recomputes the same scale from weights written back as ``s * int`` and its own nearest rounding returns
exactly the learned integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.tflite import flatbuffer as fb

LAYERS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
POSITIONS = 256  # output positions sampled per calibration sample and conv layer
ITERS = 300  # 200 in float32 kept only 0.4 of lite0's 2.5 dB eval gain (measured, docs/ptq.md)
LAMBDA = 0.01  # weight of the rounding regularizer (AdaRound's default)
ZETA, GAMMA = 1.1, -0.1  # rectified sigmoid stretch


@dataclass
class Layer:
    """One weight layer: its op, weight tensor and where its grid comes from."""

    op: int
    kind: str
    weight: int  # tensor index in the calibrated model
    inp: str  # input tensor name (same in the calibrated and the quantized model)
    out: str  # output tensor name: how the quantized model's weight is found
    scale: np.ndarray | None = None  # per output channel (or one) grid step, from the quantized model
    q_out: str = ""  # output tensor name in the quantized model (set by ``grid_scales``)


def find_layers(model) -> list[Layer]:
    """Conv/depthwise/dense ops with a constant float weight read by that op only."""
    sg, names = model.subgraphs[0], fb.op_names(model)
    readers = fb.readers(sg)
    found = []
    for k, op in enumerate(sg.operators):
        kind = names[op.opcodeIndex]
        if kind not in LAYERS or len(op.inputs) < 2 or fb.const(model, sg, int(op.inputs[1])) is None:
            continue
        if len(readers.get(int(op.inputs[1]), [])) != 1:
            continue  # a shared weight would be rounded for two layers at once
        if kind == "DEPTHWISE_CONV_2D" and op.builtinOptions.depthMultiplier not in (0, 1):
            continue
        found.append(Layer(k, kind, int(op.inputs[1]), fb.tensor_name(sg, int(op.inputs[0])),
                           fb.tensor_name(sg, int(op.outputs[0]))))
    return found


def grid_scales(quantized: bytes, layers: list[Layer]) -> list[Layer]:
    """Each layer's weight grid as the converter chose it (read from the plain INT8 model); layers whose
    weight is not int8 with one scale per output channel (or one per tensor) are dropped."""
    model = fb.load(quantized)
    sg, names = model.subgraphs[0], fb.op_names(model)
    by_out = {fb.tensor_name(sg, int(op.outputs[0])): op for op in sg.operators if len(op.outputs)}
    kept = []
    for layer in layers:
        # a 16x8 model's output layer writes "<name>_int16"; "<name>" is then its DEQUANTIZE op's output
        layer.q_out = next((n for n in (layer.out, f"{layer.out}_int16")
                            if n in by_out and names[by_out[n].opcodeIndex] == layer.kind), "")
        if not layer.q_out:
            continue
        op = by_out[layer.q_out]
        q = sg.tensors[int(op.inputs[1])].quantization
        if sg.tensors[int(op.inputs[1])].type != fb.INT8 or q is None or q.scale is None:
            continue
        layer.scale = np.asarray(q.scale, np.float64)
        kept.append(layer)
    return kept


def _flat(w: np.ndarray, kind: str) -> np.ndarray:
    """Weights as rows = output channels, columns = one input patch element each."""
    return w.reshape(-1, w.shape[3]).T if kind == "DEPTHWISE_CONV_2D" else w.reshape(w.shape[0], -1)


def _unflat(rows: np.ndarray, shape, kind: str) -> np.ndarray:
    return rows.T.reshape(shape) if kind == "DEPTHWISE_CONV_2D" else rows.reshape(shape)


def _pad_same(x: np.ndarray, k: int, stride: int, dil: int, axis: int) -> tuple[np.ndarray, int]:
    n = x.shape[axis]
    out = -(-n // stride)
    total = max((out - 1) * stride + (k - 1) * dil + 1 - n, 0)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (total // 2, total - total // 2)
    return np.pad(x, pad), out


def patches(x: np.ndarray, op, kind: str, w_shape, pos: np.ndarray | None) -> np.ndarray:
    """Input patches (positions x kh*kw*cin, or positions x kh*kw x c for depthwise) of one sample."""
    if kind == "FULLY_CONNECTED":
        return x.reshape(-1, w_shape[1])
    o = op.builtinOptions
    kh, kw = (w_shape[1], w_shape[2])
    sh, sw, dh, dw = o.strideH, o.strideW, max(o.dilationHFactor, 1), max(o.dilationWFactor, 1)
    x = x[0]
    if o.padding == 0:  # SAME
        x, oh = _pad_same(x, kh, sh, dh, 0)
        x, ow = _pad_same(x, kw, sw, dw, 1)
    else:
        oh, ow = (x.shape[0] - (kh - 1) * dh - 1) // sh + 1, (x.shape[1] - (kw - 1) * dw - 1) // sw + 1
    if pos is None:
        pos = np.arange(oh * ow)
    pos = pos[pos < oh * ow]
    r, c = (pos // ow) * sh, (pos % ow) * sw
    rows = [x[r + i * dh, c + j * dw] for i in range(kh) for j in range(kw)]
    p = np.stack(rows, 1)  # positions x kh*kw x cin
    return p if kind == "DEPTHWISE_CONV_2D" else p.reshape(len(pos), -1)


class Stats:
    """E[x_q x_q^T] and E[x_q (x_f - x_q)^T] of one layer (per channel for depthwise)."""

    def __init__(self):
        self.h = self.c = None
        self.n = 0

    def add(self, pf: np.ndarray, pq: np.ndarray) -> None:
        same = pf is pq  # symmetric fitting: the cross term is zero, skip its matmul (half the time)
        # float32 products (one sample's few hundred positions), summed across samples in float64
        pf, pq = pf.astype(np.float32), pq.astype(np.float32)
        if pf.ndim == 3:  # depthwise: positions x k x channels -> per channel k x k
            # optimize=True: a contraction over positions in BLAS. A matmul of transposed (strided) views
            # took 16x longer on 9216 positions x 9 x 1152 channels, and grew faster than the positions
            h = np.einsum("pkc,plc->ckl", pq, pq, optimize=True)
            c = np.zeros_like(h) if same else np.einsum("pkc,plc->ckl", pq, pf - pq, optimize=True)
        else:
            h = pq.T @ pq
            c = np.zeros_like(h) if same else pq.T @ (pf - pq)
        h, c = h.astype(np.float64), c.astype(np.float64)
        self.h = h if self.h is None else self.h + h
        self.c = c if self.c is None else self.c + c
        self.n += len(pf)


def _hsig(v):
    return np.clip(1 / (1 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0, 1)


def learn_rounding(w: np.ndarray, s: np.ndarray, h: np.ndarray, c: np.ndarray, iters: int = ITERS,
                   dtype=np.float32) -> np.ndarray:
    """Integers (rows x cols) minimizing the layer output error; w rows = output channels, s per row.

    ``h`` (k x k, or rows x k x k per channel) and ``c`` as in ``Stats``. The optimization runs in
    ``dtype``: float32 halves the time of its matmuls; the floor/ceil choice it feeds is a 0/1 decision."""
    per_row = h.ndim == 3
    x = w / s[:, None]
    base = np.floor(x)
    frac = x - base
    lin = ((np.einsum("rkl,rl->rk", c, w) if per_row else w @ c.T) / s[:, None]).astype(dtype)
    norm = ((np.einsum("rkk->r", h) if per_row else np.full(len(w), np.trace(h))) / w.shape[1] + 1e-12).astype(dtype)
    h, offset = h.astype(dtype), (base - x).astype(dtype)

    def grad_of(delta):  # d/d delta of (delta H delta^T - 2 delta lin) in grid units, per-row normalized
        hd = (h @ delta[:, :, None])[:, :, 0] if per_row else delta @ h
        return 2 * (hd - lin) / norm[:, None]

    p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p)).astype(dtype)  # h(v) starts at the float value itself
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    lr, warm = 0.01, iters // 5
    for t in range(1, iters + 1):
        sig = 1 / (1 + np.exp(-v))
        soft = np.clip(sig * (ZETA - GAMMA) + GAMMA, 0, 1)
        g = grad_of(offset + soft)
        if t > warm:  # anneal beta 20 -> 2: pushes every soft rounding to 0 or 1
            beta = 20 - 18 * (t - warm) / (iters - warm)
            u = 2 * soft - 1
            g = g + LAMBDA * (-beta * np.abs(u) ** (beta - 1) * np.sign(u) * 2)
        inside = (soft > 0) & (soft < 1)
        g = g * sig * (1 - sig) * (ZETA - GAMMA) * inside
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        v -= lr * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-8)
    q = base + (_hsig(v) >= 0.5)
    return _keep_grid(q, x)


def _keep_grid(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Clip to [-127, 127] and keep each row's largest weight at its nearest integer (+-127), so the
    quantizer recomputes the same per-channel scale."""
    q = np.clip(q, -127, 127)
    rows = np.arange(len(x))
    peak = np.abs(x).argmax(1)
    q[rows, peak] = np.round(x[rows, peak])
    return q


def objective(q: np.ndarray, w: np.ndarray, s: np.ndarray, h: np.ndarray, c: np.ndarray) -> float:
    """Summed layer output error (up to a constant) of integers ``q``."""
    d = q * s[:, None] - w
    if h.ndim == 3:  # batched matmuls: a three-operand einsum here took longer than the fitting
        return float(np.sum((h @ d[:, :, None])[:, :, 0] * d) - 2 * np.sum((c @ w[:, :, None])[:, :, 0] * d))
    return float(np.sum((d @ h) * d) - 2 * np.sum((w @ c.T) * d))
