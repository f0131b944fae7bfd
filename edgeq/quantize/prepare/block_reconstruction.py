"""Block reconstruction (BRECQ, Li et al. 2021): the rounding and biases of several layers fitted together,
with the INT8 model's activation grids in the loop.

``sequential_rounding`` fits one layer at a time on a quadratic objective: it sees the layer's int8 input but
not the rounding of its own output, nor how the next layers' errors add to its own. The zoo's EfficientNet-Lite
models lose what is left after it in 50-65 small, independent weight errors (docs/ptq.md), which only a
joint fit can make cancel. Here the INT8 model is cut into blocks and each block is simulated in TensorFlow
on the INT8 model's own activation grids (``block_simulation``). Each weight's rounding (up or down,
AdaRound's rectified sigmoid annealed to 0/1) and each bias are fitted so that the block, fed the INT8
model's input to it, reproduces the float model's output of it:

    min  E || block_q(x_q; floor(W/s) + h, b) - block_f(x_f) ||^2  +  lambda * rounding regularizer

Blocks go in op order; each block's integers are written into the INT8 model in place (``Int8InPlace``) before
the next block's inputs are read, so later blocks fit on what the earlier ones left. A block fits on 3/4 of the
samples and keeps its fit only when its output error on the other quarter is lower than with the integers it
started from. With ``ranges`` the block's activation ranges are fitted too and written into the calibrated
model's min/max; the converter then quantizes it again, so later blocks read inputs on the new grids.

Only ``--ptq blocks`` runs it, as an alternative to ``sequential_rounding`` judged on the held-back samples:
on EfficientNet-Lite0/1 it ties ``sequential_rounding`` with the zoo's 36 fit samples at 2.2-2.6x its time,
and was the better one on Lite1 with 186 calibration crops (docs/ptq.md,
``benchmarks/ptq_diagnosis/block_reconstruction.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.quantize.prepare.activations import TensorTable, int_feeds, run_each_sample
from edgeq.quantize.prepare.adaround import (GAMMA, ZETA, _flat, _hsig, _keep_grid, _unflat, find_layers,
                                             grid_scales)
from edgeq.quantize.prepare.block_simulation import WEIGHTED, FittedRange, Simulation, blocks
from edgeq.quantize.prepare.int8_in_place import Int8InPlace
from edgeq.quantize.prepare.ranges import EDITABLE_OPS, with_ranges
from edgeq.quantize.prepare.sequential_rounding import MAX_SAMPLES, _FloatInputs
from edgeq.quantize.prepare.step import Backend, Candidate
from edgeq.tflite import flatbuffer as fb

ITERS = 300
BATCH = 8  # samples per iteration
# the rounding regularizer's weight against the output error relative to the starting one's: at 0.01 (AdaRound's
# value for its unnormalized loss) most roundings were still undecided after ITERS, and hardening them undid the fit
LAMBDA = 1.0
LR_ROUNDING, LR_BIAS = 0.05, 1e-3  # Adam steps; a 1e-2 bias step overshot (toy residual model: -1 dB per block)
LR_RANGE = 1e-3  # Adam step on an activation range's log factor: at most about 30% over ITERS


@dataclass
class _Weights:
    """One weight layer of a block: its float weight and grid step, the rounding it starts from, and the fitted
    rounding logits and bias (TensorFlow variables, set by ``_fit``)."""

    name: str  # output tensor name in the INT8 model (``Int8InPlace``'s key)
    kind: str  # CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED
    cal_op: int  # the op in the calibrated model
    w: np.ndarray  # float weight, TFLite layout
    s: np.ndarray  # grid step, broadcastable to w
    bias: np.ndarray | None
    h0: np.ndarray | None = None  # the rounding to start from (0 down, 1 up); None: nearest
    v: object = None  # tf.Variable: AdaRound's rounding logits
    b: object = None  # tf.Variable: the bias

    def ints(self, tf=None, hard: bool = False):
        """The integers: hard (numpy) without ``tf``; soft or hard tensors with it."""
        base = np.floor(self.w / self.s).astype(np.float32)
        if tf is None:
            return np.clip(base + (_hsig(self.v.numpy()) >= 0.5), -127, 127)
        h = _soft(tf, self.v)
        return tf.clip_by_value(base + (tf.cast(h >= 0.5, tf.float32) if hard else h), -127, 127)


def _soft(tf, v):
    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


@dataclass(frozen=True)
class BlockFit:
    """What fitting one block did: its output error's change (dB, positive = closer to float) on the samples
    it fitted and on those held back, how many weights changed their integer, and whether it was kept."""

    fit_db: float
    held_db: float
    moved: int
    weights: int
    kept: bool


def _fit(sim: Simulation, layers: list[_Weights], xq: np.ndarray, yf: np.ndarray, iters: int, seed: int,
         xf: np.ndarray | None = None, drop: float = 0.0) -> BlockFit:
    """Fit the block's rounding and biases on 3/4 of the samples; kept when the fit beats the integers it
    started from on the other quarter (on the samples it fitted, a block's fit always looks better: the
    classifier head of EfficientNet-Lite0 flipped 39% of its roundings to fit 36 samples)."""
    tf = sim.tf
    rng = np.random.default_rng(seed)
    for lw in layers:  # h(v) starts at the weight's own fraction (nearest once hardened), or near ``h0``
        frac = lw.w / lw.s - np.floor(lw.w / lw.s) if lw.h0 is None else 0.25 + 0.5 * lw.h0
        p = np.clip((frac - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
        lw.v = tf.Variable(np.log(p / (1 - p)).astype(np.float32))
        lw.b = None if lw.bias is None else tf.Variable(lw.bias.astype(np.float32))
    for r in sim.ranges.values():
        r.v = tf.Variable(np.zeros(2, np.float32))
    vs, bs = [lw.v for lw in layers], [lw.b for lw in layers if lw.b is not None]
    rs = [r.v for r in sim.ranges.values()]
    n_weights = float(sum(lw.w.size for lw in layers))

    @tf.function(reduce_retracing=True)
    def sq_error(x, y):
        d = sim(x, True) - y
        return tf.reduce_sum(d * d)

    held = np.arange(len(xq)) % 4 == 3
    xv, yv, xq, yf = xq[held], yf[held], xq[~held], yf[~held]
    xf = None if xf is None or not drop else xf[~held]

    def error(x, y) -> float:
        return sum(float(sq_error(tf.constant(x[i:i + BATCH]), tf.constant(y[i:i + BATCH])))
                   for i in range(0, len(x), BATCH)) / max(y.size, 1)

    before, before_held = error(xq, yf), error(xv, yv)
    if before == 0:
        return BlockFit(0.0, 0.0, 0, int(n_weights), False)
    start = [(lw.v.numpy().copy(), None if lw.b is None else lw.b.numpy().copy()) for lw in layers]
    opt_v, opt_b = tf.keras.optimizers.Adam(LR_ROUNDING), tf.keras.optimizers.Adam(LR_BIAS)
    opt_r = tf.keras.optimizers.Adam(LR_RANGE)

    @tf.function(reduce_retracing=True)
    def train(x, y, beta, reg_on):
        with tf.GradientTape() as tape:
            d = sim(x) - y
            # the output error relative to the starting rounding's, so LAMBDA weighs alike in every block
            loss = tf.reduce_mean(d * d) / before
            reg = tf.add_n([tf.reduce_sum(1 - tf.abs(2 * _soft(tf, lw.v) - 1) ** beta) for lw in layers])
            loss = loss + reg_on * LAMBDA * reg / n_weights
        grads = tape.gradient(loss, vs + bs + rs)
        opt_v.apply_gradients(zip(grads[:len(vs)], vs))
        if bs:
            opt_b.apply_gradients(zip(grads[len(vs):len(vs) + len(bs)], bs))
        if rs:
            opt_r.apply_gradients(zip(grads[len(vs) + len(bs):], rs))
        return loss

    warm = iters // 5
    for t in range(iters):
        idx = rng.choice(len(xq), min(BATCH, len(xq)), replace=False)
        beta = 20 - 18 * max(t - warm, 0) / max(iters - warm, 1)
        x = xq[idx]
        if xf is not None:  # QDrop (Wei et al. 2022): some inputs float, so the fit does not lean on one noise draw
            x = np.where(rng.random(x.shape) < drop, xf[idx], x)
        train(tf.constant(x), tf.constant(yf[idx]), tf.constant(beta, tf.float32),
              tf.constant(float(t >= warm)))
    after, after_held = error(xq, yf), error(xv, yv)
    moved = sum(int(np.sum(lw.ints() != np.clip(np.round(lw.w / lw.s) if lw.h0 is None else
                                                 np.floor(lw.w / lw.s) + lw.h0, -127, 127))) for lw in layers)
    fit = BlockFit(_db(before, after), _db(before_held, after_held), moved, int(n_weights), after_held < before_held)
    if not fit.kept:
        for lw, (v, b) in zip(layers, start):
            lw.v.assign(v)
            if b is not None:
                lw.b.assign(b)
        for r in sim.ranges.values():
            r.v.assign(np.zeros(2, np.float32))
    return fit


def _activations(model) -> list[tuple[int, ...]]:
    """Each op's output tensor indices: what must not change when the converter quantizes the model again."""
    sg = model.subgraphs[0]
    return [tuple(int(i) for i in op.outputs) for op in sg.operators]


def _fitted_ranges(qmodel, block, table: TensorTable, calibrated, f_index: dict[str, int]) -> dict[int, FittedRange]:
    """The block's int8 activations whose range the converter takes from the calibrated model's min/max,
    each starting from its grid in the INT8 model."""
    qsg, names, csg = qmodel.subgraphs[0], fb.op_names(qmodel), calibrated.subgraphs[0]
    found = {}
    for k in block.ops:
        op = qsg.operators[k]
        out = int(op.outputs[0])
        name = fb.tensor_name(qsg, out)
        if names[op.opcodeIndex] not in EDITABLE_OPS or qsg.tensors[out].type != fb.INT8 \
                or out not in table.quantized or name not in f_index:
            continue
        q = csg.tensors[f_index[name]].quantization
        if q is None or q.min is None or len(q.min) != 1:
            continue
        s, z = table.quantized[out]
        found[out] = FittedRange((-128 - z) * s, (127 - z) * s)
    return found


def _db(before: float, after: float) -> float:
    return round(float(10 * np.log10(before / after)), 2) if after > 0 and before > 0 else 0.0


@dataclass(frozen=True)
class Reconstructed:
    """What ``reconstruct`` made: the edited calibrated model, the converter's INT8 of it (the integers fitted
    in place), and what each block's fit did."""

    calibrated: object
    content: bytes
    blocks: int  # blocks whose fit was kept
    layers: int
    fits: tuple[BlockFit, ...] = ()  # every block tried, in op order
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # activation -> fitted (min, max)


def reconstruct(cal, feeds: dict[str, np.ndarray], iters: int = ITERS, seed: int = 0, start=None,
                max_samples: int = MAX_SAMPLES, drop: float = 0.0, ranges: bool = False) -> Reconstructed | None:
    """``cal`` with the rounding and biases of every block's weight layers fitted jointly (see the module
    docstring); None when no block was changed. ``start``, the same graph with its weights on the grid
    (e.g. ``sequential_rounding``'s), gives the integers and biases the fit starts from. ``ranges`` also fits
    the range of each int8 activation the converter takes from calibration (conv, depthwise, dense and add
    outputs), written into the calibrated model's min/max."""
    base = start if start is not None else cal
    quantized = base.quantize()
    model = fb.load(base.content)
    sg = model.subgraphs[0]
    orig = fb.load(cal.content)
    osg = orig.subgraphs[0]
    layers = {layer.q_out: layer for layer in grid_scales(quantized, find_layers(model))}
    mirror = Int8InPlace(quantized)
    qmodel = fb.load(bytes(mirror.content))
    qsg, qnames = qmodel.subgraphs[0], fb.op_names(qmodel)
    f_index = TensorTable.of_model(model).index
    feeds = {k: v[:max_samples] for k, v in feeds.items()}
    q_feeds = int_feeds(quantized, feeds)
    todo = [b for b in blocks(qmodel) if fb.tensor_name(qsg, b.out) in f_index]
    wanted = [f_index[n] for b in todo for n in (fb.tensor_name(qsg, b.inp), fb.tensor_name(qsg, b.out))
              if n in f_index and (drop or n == fb.tensor_name(qsg, b.out))]
    sizes = {i: int(np.prod([max(int(d), 1) for d in sg.tensors[i].shape[1:]])) for i in wanted}
    floats = _FloatInputs(cal.content, feeds, list(dict.fromkeys(wanted)), sizes)
    kept_blocks = kept_layers = 0
    fitted: dict[str, tuple[float, float]] = {}
    fits: list[BlockFit] = []
    for n, block in enumerate(todo):
        ws = {}
        for k in block.ops:
            name = fb.tensor_name(qsg, int(qsg.operators[k].outputs[0]))
            layer = layers.get(name)
            if qnames[qsg.operators[k].opcodeIndex] not in WEIGHTED or layer is None or name not in mirror.weights:
                continue
            op = sg.operators[layer.op]
            w = fb.const(orig, osg, int(osg.operators[layer.op].inputs[1])).astype(np.float32)
            axis = 3 if layer.kind == "DEPTHWISE_CONV_2D" else 0
            shape = [1] * w.ndim
            shape[axis] = -1
            s = np.broadcast_to(layer.scale, (w.shape[axis],)).reshape(shape).astype(np.float32)
            h0 = None
            if start is not None:  # the start's integers as up (1) or down (0) from the float weight
                h0 = np.clip(np.round(fb.const(model, sg, layer.weight) / s) - np.floor(w / s), 0, 1)
            bias_t = int(op.inputs[2]) if len(op.inputs) > 2 else -1
            bias = fb.const(model, sg, bias_t) if bias_t >= 0 and name in mirror.biases else None
            ws[k] = _Weights(name, layer.kind, layer.op, w, s, bias, h0)
        if not ws:
            continue
        xq = np.concatenate([mirror.table.real(block.inp, v[block.inp])
                             for v in run_each_sample(bytes(mirror.content), q_feeds, [block.inp])])
        in_name = fb.tensor_name(qsg, block.inp)
        xf = np.concatenate(floats.get(f_index[in_name])).astype(np.float32) if drop and in_name in f_index else None
        yf = np.concatenate(floats.get(f_index[fb.tensor_name(qsg, block.out)]))
        rs = _fitted_ranges(qmodel, block, mirror.table, model, f_index) if ranges else {}
        sim = Simulation(qmodel, block, mirror.table, ws, rs)
        fit = _fit(sim, list(ws.values()), xq.astype(np.float32), yf.astype(np.float32), iters, seed + n, xf, drop)
        fits.append(fit)
        if not fit.kept:
            continue
        for lw in ws.values():
            q = _keep_grid(_flat(lw.ints(), lw.kind), _flat(lw.w / lw.s, lw.kind))
            ints = _unflat(q, lw.w.shape, lw.kind)
            new_w = (ints * lw.s).astype(np.float32)
            new_b = None if lw.b is None else lw.b.numpy().astype(np.float32)
            if not mirror.write(lw.name, ints, new_w, new_b):
                continue
            op = sg.operators[lw.cal_op]
            op.inputs[1] = fb.new_const(model, sg, int(op.inputs[1]), new_w, "/block")
            if new_b is not None:
                op.inputs[2] = fb.new_const(model, sg, int(op.inputs[2]), new_b, "/block_bias")
            kept_layers += 1
        kept_blocks += 1
        moved = {fb.tensor_name(qsg, i): r.bounds() for i, r in rs.items() if np.any(r.v.numpy() != 0)}
        fitted.update(moved)
        if moved:  # new activation grids: the converter quantizes again, the later blocks read the new model
            content = with_ranges(fb.dump(model), moved)
            model = fb.load(content)
            sg = model.subgraphs[0]
            mirror = Int8InPlace(cal.with_content(content).quantize())
            again = fb.load(bytes(mirror.content))
            if _activations(again) != _activations(qmodel):  # the blocks hold op and tensor indices
                raise RuntimeError("block reconstruction: the converter reordered the INT8 model's ops")
            qmodel, qsg, qnames = again, again.subgraphs[0], fb.op_names(again)
    if not kept_layers:
        return None
    fb.drop_replaced_constants(model)
    current = cal.with_content(fb.dump(model))
    return Reconstructed(current, current.quantize(), kept_blocks, kept_layers, tuple(fits), fitted)


class BlockReconstructionStep:
    """Rounding and biases fitted block by block with the INT8 activations in the loop (a PTQ step, see
    ``step.py``): one candidate, judged on held-back samples; ``--ptq blocks`` only (module docstring)."""

    name, needs_held_back = "block_reconstruction", True
    backend = Backend.CALIBRATED

    def candidates(self, cal, fit):
        done = reconstruct(cal, fit)
        if done is None:
            return []
        n_fit = min(len(next(iter(fit.values()))), MAX_SAMPLES)
        return [Candidate(done.calibrated, f"rounding and biases fitted jointly in {done.blocks} blocks "
                          f"({done.layers} layers) on the INT8 model's inputs ({n_fit} samples)", "", done.content)]
