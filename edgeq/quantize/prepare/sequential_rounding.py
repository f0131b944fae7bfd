"""Learned rounding and bias correction together, one layer at a time on the INT8 model's own inputs.

It replaces two earlier steps: learned rounding fitted every layer against float inputs in one pass, and bias
drift correction then pulled each layer's output means back; run after it, learned rounding moved the mean
errors again and undid the correction (the zoo's EfficientNet-Lite0: -2.4 dB held-back, so it was skipped).
This step does both in AdaRound's asymmetric form, the way the paper fits it: layers in op order, each on the
inputs the INT8 model gives it *after* its upstream layers were rounded and corrected,

    min over h in {0,1}:  E || W x_f - s (floor(W/s) + h) x_q ||^2

then the bias takes back the mean error left, W E[x_f] - W_q E[x_q] per output channel (the pre-activation
mean, from the same sampled input patches). Each layer's integers and int32 bias are written straight into
the INT8 model's bytes, so a layer costs one run of the float and one of the INT8 model on the fit samples,
not a re-quantization. The calibrated model gets the same weights (on the grid, see ``adaround``)
and biases, and the converter quantizes it once at the end to the same integers.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeq.quantize.prepare.activations import TensorTable, int_feeds, run_each_sample
from edgeq.quantize.prepare.adaround import (ITERS, POSITIONS, Stats, _flat, _keep_grid, _unflat, find_layers,
                                             grid_scales, learn_rounding, objective, patches)
from edgeq.quantize.prepare.float_in_place import FloatInPlace
from edgeq.quantize.prepare.int8_in_place import Int8InPlace
from edgeq.quantize.prepare.step import Backend, Candidate
from edgeq.tflite import flatbuffer as fb

CACHE_BYTES = 1 << 29  # float layer inputs kept at once (512 MiB)
# the models run on at most this many fit samples. Fewer (16) for layers with many output positions cost the
# zoo's EfficientNet-Lite2 1.1 dB of eval SQNR in bias drift correction, this step's predecessor
MAX_SAMPLES = 64


@dataclass(frozen=True)
class Rounded:
    """What ``corrected`` made: the edited calibrated model, the converter's INT8 (or 16x8) of it, how many
    layers changed, and the model the layers were fitted on as it was edited in place (the INT8 one: the
    converter's integers equal its own)."""

    calibrated: object
    content: bytes
    layers: int
    in_place: Int8InPlace | FloatInPlace


class _FloatInputs:
    """The float model's input of each layer on the fit samples. The float model does not change, so it
    runs once for a run of consecutive layers whose inputs fit in CACHE_BYTES, not once per layer."""

    def __init__(self, content: bytes, feeds: dict[str, np.ndarray], order: list[int], sizes: dict[int, int]):
        self.content, self.feeds, self.order, self.sizes = content, feeds, order, sizes
        self.n = len(next(iter(feeds.values())))
        self.cache: dict[int, list[np.ndarray]] = {}

    def get(self, index: int) -> list[np.ndarray]:
        if index not in self.cache:
            self.cache.clear()
            chunk, total = [], 0
            for i in self.order[self.order.index(index):]:
                total += 4 * self.sizes[i] * self.n
                if chunk and total > CACHE_BYTES:
                    break
                chunk.append(i)
            self.cache = {i: [] for i in chunk}
            for values in run_each_sample(self.content, self.feeds, chunk):
                for i in chunk:
                    self.cache[i].append(values[i].astype(np.float32))
                    self.sizes[i] = values[i].size  # a dynamic dim's real extent, for the next chunk
        return self.cache[index]


def _int8(cal) -> bytes:
    return cal.quantize()


def corrected(cal, feeds: dict[str, np.ndarray], iters: int = ITERS, seed: int = 0,
              quantize: Callable[[object], bytes] = _int8, float_stand_in: bool = False) -> Rounded | None:
    """``cal`` with every conv/depthwise/dense layer's rounding learned and bias corrected in op order;
    None when there is nothing to do. ``quantize`` makes the integer model of a calibrated one (full INT8,
    or 16x8); ``float_stand_in`` fits the layers on the float model with the weights rounded so far instead
    of on that integer model (16x8: its activations lose next to nothing, see ``float_in_place``)."""
    model = fb.load(cal.content)
    sg = model.subgraphs[0]
    quantized = quantize(cal)
    layers = grid_scales(quantized, find_layers(model))
    mirror = FloatInPlace(cal.content) if float_stand_in else Int8InPlace(quantized)
    f_index = TensorTable.of_model(model).index
    feeds = {k: v[:MAX_SAMPLES] for k, v in feeds.items()}
    q_feeds = feeds if float_stand_in else int_feeds(quantized, feeds)
    rng = np.random.default_rng(seed)
    wanted = [f_index[layer.inp] for layer in layers]
    sizes = {i: int(np.prod([max(int(d), 1) for d in sg.tensors[i].shape[1:]])) for i in wanted}
    floats = _FloatInputs(cal.content, feeds, list(dict.fromkeys(wanted)), sizes)
    done = 0
    for layer in layers:
        op = sg.operators[layer.op]
        key = mirror.key(layer)
        qi = mirror.inputs.get(key)
        bias_t = int(op.inputs[2]) if len(op.inputs) > 2 else -1
        bias = fb.const(model, sg, bias_t) if bias_t >= 0 else None
        if qi is None or key not in mirror.weights:
            continue
        if bias is not None and key not in mirror.biases:
            bias = None  # (not seen) a float bias the INT8 model has no int32 twin of: rounding only
        w4 = fb.const(model, sg, layer.weight).astype(np.float64)
        w = _flat(w4, layer.kind)
        s = np.broadcast_to(layer.scale, (len(w),)).astype(np.float64) if layer.scale.size in (1, len(w)) else None
        if s is None or np.any(s <= 0):
            continue
        pfs, pqs = [], []
        qruns = run_each_sample(bytes(mirror.content), q_feeds, [qi])
        for xf, qv in zip(floats.get(f_index[layer.inp]), qruns):
            xq = mirror.table.real(qi, qv[qi])
            pos = None
            if layer.kind != "FULLY_CONNECTED" and xf.shape[1] * xf.shape[2] > POSITIONS:
                pos = rng.choice(xf.shape[1] * xf.shape[2], POSITIONS, replace=False)
            pfs.append(patches(xf, op, layer.kind, w4.shape, pos))
            pqs.append(patches(xq, op, layer.kind, w4.shape, pos))
        if not pfs:
            continue
        st = Stats()
        pf, pq = np.concatenate(pfs), np.concatenate(pqs)
        st.add(pf, pq)  # one product over every sample (see Stats.add for the depthwise contraction)
        mf, mq = pf.mean(0, dtype=np.float64), pq.mean(0, dtype=np.float64)
        del pfs, pqs, pf, pq
        h, c = st.h / st.n, st.c / st.n
        q = learn_rounding(w, s, h, c, iters)
        nearest = _keep_grid(np.round(w / s[:, None]), w / s[:, None])
        if objective(q, w, s, h, c) >= objective(nearest, w, s, h, c):
            q = nearest
        wq = q * s[:, None]
        if layer.kind == "DEPTHWISE_CONV_2D":  # patch means are k x channels; rows of w are channels
            drift = np.einsum("ck,kc->c", w, mf) - np.einsum("ck,kc->c", wq, mq)
        else:
            drift = w @ mf - wq @ mq
        new_w = _unflat(wq, w4.shape, layer.kind).astype(np.float32)
        # a layer without a bias (the converter drops zero ones) keeps its mean error
        new_bias = None if bias is None else (bias.astype(np.float64) + drift).astype(np.float32)
        if not mirror.write(key, _unflat(q, w4.shape, layer.kind), new_w, new_bias):
            continue
        op.inputs[1] = fb.new_const(model, sg, layer.weight, new_w, "/rounding")
        if new_bias is not None:
            op.inputs[2] = fb.new_const(model, sg, bias_t, new_bias, "/rounding_bias")
        done += 1
    if not done:
        return None
    fb.drop_replaced_constants(model)
    current = cal.with_content(fb.dump(model))
    return Rounded(current, quantize(current), done, mirror)


class SequentialRoundingStep:
    """Learned rounding and bias correction layer by layer on the INT8 model's own inputs (a PTQ step, see
    ``step.py``): one candidate, judged on held-back samples."""

    name, needs_held_back = "sequential_rounding", True
    backend = Backend.CALIBRATED

    def __init__(self, quantize: Callable[[object], bytes] = _int8, float_stand_in: bool = False):
        # the integer model of a calibrated one (full INT8 or 16x8), and what the layers are fitted on
        self.quantize, self.float_stand_in = quantize, float_stand_in

    def candidates(self, cal, fit):
        done = corrected(cal, fit, quantize=self.quantize, float_stand_in=self.float_stand_in)
        if done is None:
            return []
        n_fit = min(len(next(iter(fit.values()))), MAX_SAMPLES)
        return [Candidate(done.calibrated, f"rounding learned and bias corrected for {done.layers} layers, one "
                          f"at a time on the INT8 model's inputs ({n_fit} samples)", "", done.content)]
