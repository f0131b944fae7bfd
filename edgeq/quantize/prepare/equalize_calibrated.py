"""Channel equalization in the calibrated flatbuffer, so every source (Keras, SavedModel, ONNX) gets it.

For ``P -> (pool | mean | ReLU | per-channel ADD/MUL | pad | reshape | transpose)* -> Q`` with P a conv,
depthwise or dense layer and Q a conv or dense layer, output channel c of P is divided by s_c and the
weights Q reads channel c with are multiplied by s_c. Every op between commutes with a positive
per-channel scale (an ADD constant is divided by s_c too), so the float function is unchanged.

Why here, and why activation-aware: weights are quantized per output channel, so P's weights do not
care about s_c; what suffers is the per-tensor int8 scale of the activations between P and Q, set by
the widest channel. A BatchNorm after ReLU folded into P (``fold_affine``) leaves exactly that: PyTorch's
``Conv -> ReLU -> BN`` exports come out with channel ranges two decades apart. s_c = a_c^alpha / w_c^(1-alpha)
(a_c: the channel's calibration peak, w_c: Q's weight peak on that input channel) moves the spread
into Q's weights, where per-channel quantization absorbs most of it (SmoothQuant's migration, Xiao et
al. 2023; cross-layer equalization of Nagel et al. 2019 for per-tensor activations).

The recorded min/max of each tensor between P and Q is recomputed from per-channel statistics of the
calibration data, exactly as the converter's min/max calibration would record them for the scaled model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.quantize.prepare.step import Backend, Candidate
from edgeq.tflite import flatbuffer as fm

PRODUCER_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # weight axis of output channels
CONSUMERS = ("CONV_2D", "FULLY_CONNECTED")
CHANNEL_LAST_OPS = {"MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN", "RELU", "ADD", "MUL", "PAD"}
ALPHAS = (0.25, 0.5, 0.75, 1.0)  # migration strengths tried; each is scored on held-back calibration samples


@dataclass
class Chain:
    """One P -> ... -> Q pair and the tensors whose values the scaling changes."""

    producer: int  # operator indices
    consumer: int
    between: list[int]  # operators strictly between, in order
    tensors: list[int]  # P's output and every tensor up to Q's input
    channel_of: dict[int, np.ndarray]  # tensor -> channel index of each element (batch 1)
    channels: int


def _per_channel_const(value: np.ndarray, channels: int) -> bool:
    return value.size in (1, channels) and all(d == 1 for d in value.shape[:-1])


def _commutes(model, sg, names, op, x: int, channel_map: np.ndarray, channels: int) -> np.ndarray | None:
    """The channel map of ``op``'s output if the op commutes with a positive per-channel scale of input ``x``."""
    kind = names[op.opcodeIndex]
    opts = op.builtinOptions
    act = getattr(opts, "fusedActivationFunction", fm.NONE) if opts is not None else fm.NONE
    if act not in (fm.NONE, fm.RELU):
        return None
    out_shape = [int(d) for d in sg.tensors[int(op.outputs[0])].shape]
    others = [int(i) for i in op.inputs if int(i) != x]
    if kind in CHANNEL_LAST_OPS:
        canonical = np.broadcast_to(np.arange(channels), channel_map.shape)
        if not out_shape or out_shape[-1] != channels or not np.array_equal(channel_map, canonical):
            return None
        if kind in ("ADD", "MUL"):
            c = fm.const(model, sg, others[0]) if len(others) == 1 else None
            if c is None or not _per_channel_const(c, channels):
                return None
        if kind == "MEAN":
            axes = fm.int32_const(model, sg, others[0]) if len(others) == 1 else None
            if axes is None or np.any(axes % channel_map.ndim == channel_map.ndim - 1):
                return None  # averaging over spatial axes only
        if kind == "PAD":
            pads = fm.int32_const(model, sg, others[0]) if len(others) == 1 else None
            if pads is None or np.any(pads.reshape(-1, 2)[-1] != 0):
                return None  # zero padding of spatial axes only
        return np.broadcast_to(np.arange(channels), out_shape)
    if kind == "RESHAPE":
        return channel_map.reshape(out_shape) if int(np.prod(out_shape)) == channel_map.size else None
    if kind == "TRANSPOSE":
        perm = fm.int32_const(model, sg, others[0]) if len(others) == 1 else None
        return None if perm is None else np.transpose(channel_map, perm)
    return None


def find_chains(model, sg, names: list[str]) -> list[Chain]:
    """Every producer -> consumer pair whose tensors in between have exactly one reader each."""
    # SHAPE reads only the shape (Keras' Flatten with a dynamic batch); a scale does not change it
    readers = fm.readers(sg, names, ignore=("SHAPE",))
    outputs = {int(o) for o in sg.outputs}
    chains = []
    for p, op in enumerate(sg.operators):
        kind = names[op.opcodeIndex]
        if kind not in PRODUCER_AXIS or len(op.inputs) < 2 or fm.const(model, sg, int(op.inputs[1])) is None:
            continue
        if op.builtinOptions.fusedActivationFunction not in (fm.NONE, fm.RELU):
            continue
        if kind == "DEPTHWISE_CONV_2D" and op.builtinOptions.depthMultiplier not in (0, 1):
            continue
        t = int(op.outputs[0])
        shape = [int(d) for d in sg.tensors[t].shape]
        if not shape or shape[0] != 1:
            continue
        channels = shape[-1]
        cmap = np.broadcast_to(np.arange(channels), shape)
        tensors, between, maps = [t], [], {t: cmap}
        while t not in outputs and len(readers.get(t, [])) == 1:
            k = readers[t][0]
            nxt = sg.operators[k]
            if names[nxt.opcodeIndex] in CONSUMERS and int(nxt.inputs[0]) == t:
                if _consumer_columns(model, sg, names, nxt, cmap) is not None:
                    chains.append(Chain(p, k, between, tensors, maps, channels))
                break
            cmap = _commutes(model, sg, names, nxt, t, cmap, channels)
            if cmap is None or len(nxt.outputs) != 1:
                break
            t = int(nxt.outputs[0])
            tensors.append(t)
            between.append(k)
            maps[t] = cmap
    return chains


def _consumer_columns(model, sg, names, op, cmap: np.ndarray) -> np.ndarray | None:
    """The channel each input column of Q's weights reads, or None when Q is not a plain conv/dense."""
    w = fm.const(model, sg, int(op.inputs[1]))
    if w is None:
        return None
    if names[op.opcodeIndex] == "CONV_2D":
        canonical = np.broadcast_to(np.arange(cmap.shape[-1]), cmap.shape)
        return np.arange(w.shape[3]) if w.shape[3] == cmap.shape[-1] and np.array_equal(cmap, canonical) else None
    rows = cmap.reshape(-1, w.shape[1]) if cmap.size % w.shape[1] == 0 else None
    if rows is None or not np.all(rows == rows[0]):
        return None
    return rows[0]


def channel_stats(calibrated: bytes, feeds: dict[str, np.ndarray], chains: list[Chain]) -> dict[int, tuple]:
    """Per-channel (min, max) of every chain tensor over all calibration samples (tensor -> (mins, maxs))."""
    from edgeq.quantize.prepare.activations import run_each_sample

    stats: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    wanted = {}
    for ch in chains:
        for t in ch.tensors:
            cmap = ch.channel_of[t].reshape(-1)
            last = np.array_equal(cmap, np.resize(np.arange(ch.channels), cmap.size))
            wanted[t] = (None if last else cmap, ch.channels)  # channel-last: a reshape, no scatter needed
    for values in run_each_sample(calibrated, feeds, list(wanted)):
        for t, v in values.items():
            cmap, n = wanted[t]
            if cmap is None:
                v = v.reshape(-1, n)
                lo, hi = v.min(0).astype(np.float64), v.max(0).astype(np.float64)
            else:
                v = v.reshape(-1)
                lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
                np.minimum.at(lo, cmap, v)
                np.maximum.at(hi, cmap, v)
            if t in stats:
                lo, hi = np.minimum(lo, stats[t][0]), np.maximum(hi, stats[t][1])
            stats[t] = (lo, hi)
    return stats


def equalize_calibrated(calibrated: bytes, feeds: dict[str, np.ndarray], alpha: float = 0.5,
                        chains_stats: tuple[list[Chain], dict] | None = None) -> tuple[bytes, int]:
    """``calibrated`` with every producer/consumer chain equalized; returns (bytes, chains equalized).

    ``chains_stats`` (from ``prepare``) skips the calibration run when several alphas are tried."""
    model = fm.load(calibrated)
    names = fm.op_names(model)
    sg = model.subgraphs[0]
    chains, stats = chains_stats if chains_stats is not None else (find_chains(model, sg, names), None)
    if not chains:
        return calibrated, 0
    stats = stats if stats is not None else channel_stats(calibrated, feeds, chains)
    for ch in chains:
        _scale_chain(model, sg, names, ch, stats, alpha)
    return fm.dump(model), len(chains)


def prepare(calibrated: bytes, feeds: dict[str, np.ndarray]) -> tuple[list[Chain], dict]:
    """The chains of ``calibrated`` and their calibration statistics, to try several alphas on."""
    model = fm.load(calibrated)
    chains = find_chains(model, model.subgraphs[0], fm.op_names(model))
    return chains, (channel_stats(calibrated, feeds, chains) if chains else {})


def migration_scales(act: np.ndarray, wpeak: np.ndarray, alpha: float) -> np.ndarray:
    """Per channel s = a^alpha / w^(1-alpha) (a: activation peak, w: the consumer's weight peak on that
    channel), normalized to geometric mean 1; 1 where either peak is zero."""
    ok = (act > 1e-12) & (wpeak > 1e-12) & np.isfinite(act)
    s = np.where(ok, np.where(ok, act, 1.0) ** alpha / np.where(ok, wpeak, 1.0) ** (1 - alpha), 1.0)
    s = s / np.exp(np.mean(np.log(s)))  # overall level is irrelevant to int8; keep values near their old size
    return np.clip(s, 1e-4, 1e4)


def _scale_chain(model, sg, names, ch: Chain, stats, alpha: float) -> None:
    prod, cons = sg.operators[ch.producer], sg.operators[ch.consumer]
    act = np.zeros(ch.channels)
    for t in ch.tensors:
        lo, hi = stats[t]
        act = np.maximum(act, np.maximum(np.abs(lo), np.abs(hi)))
    wq = fm.const(model, sg, int(cons.inputs[1]))
    cols = _consumer_columns(model, sg, names, cons, ch.channel_of[ch.tensors[-1]])
    in_axis = 3 if names[cons.opcodeIndex] == "CONV_2D" else 1
    col_peak = np.abs(np.moveaxis(wq, in_axis, 0)).reshape(wq.shape[in_axis], -1).max(1)
    wpeak = np.zeros(ch.channels)
    np.maximum.at(wpeak, cols, col_peak)
    s = migration_scales(act, wpeak, alpha).astype(np.float32)

    axis = PRODUCER_AXIS[names[prod.opcodeIndex]]
    w = fm.const(model, sg, int(prod.inputs[1]))
    shape = [1] * w.ndim
    shape[axis] = ch.channels
    prod.inputs[1] = fm.new_const(model, sg, int(prod.inputs[1]), w / s.reshape(shape), "/equalized")
    if len(prod.inputs) > 2 and int(prod.inputs[2]) >= 0:
        b = fm.const(model, sg, int(prod.inputs[2]))
        prod.inputs[2] = fm.new_const(model, sg, int(prod.inputs[2]), b / s, "/equalized")
    for k in ch.between:
        op = sg.operators[k]
        if names[op.opcodeIndex] != "ADD":
            continue  # MUL constants, pools, pads, reshapes pass the scale through unchanged
        j = next(j for j, i in enumerate(op.inputs) if fm.const(model, sg, int(i)) is not None)
        c = fm.const(model, sg, int(op.inputs[j]))
        op.inputs[j] = fm.new_const(model, sg, int(op.inputs[j]),
                                    (np.broadcast_to(c.reshape(-1), (ch.channels,)) / s).reshape(
                                        [1] * (c.ndim - 1) + [ch.channels]), "/equalized")
    scale_in = np.ones(wq.shape[in_axis], np.float32) * s[cols]
    shape = [1] * wq.ndim
    shape[in_axis] = wq.shape[in_axis]
    cons.inputs[1] = fm.new_const(model, sg, int(cons.inputs[1]), wq * scale_in.reshape(shape), "/equalized")
    for t in ch.tensors:  # what min/max calibration records for the scaled tensors
        lo, hi = stats[t]
        q = sg.tensors[t].quantization
        if q is not None and q.min is not None and len(q.min) == 1:
            q.min = [float(np.min(lo / s))]
            q.max = [float(np.max(hi / s))]


class EqualizeCalibratedStep:
    """Activation-aware channel equalization in the calibrated flatbuffer, one variant per migration strength
    (a PTQ step, see ``step.py``)."""

    name, needs_held_back = "equalize_calibrated", False
    backend = Backend.CALIBRATED

    def candidates(self, cal, fit):
        chains, stats = prepare(cal.content, fit)
        if not chains:
            return []
        out = []
        for alpha in ALPHAS:
            content, _ = equalize_calibrated(cal.content, fit, alpha, (chains, stats))
            out.append(Candidate(cal.with_content(content), f"{len(chains)} layer pairs equalized, alpha {alpha:g}",
                                 f"{alpha:g}"))
        return out
