"""A block of an INT8 TFLite model, simulated in TensorFlow: what block reconstruction fits weights through.

``blocks`` cuts the INT8 model where exactly one activation tensor is alive (an inverted residual is one block;
plain chains are grouped up to ``MAX_LAYERS`` weight layers). ``Simulation`` runs one block in float with every
op's output fake-quantized on the INT8 model's own scale and zero point (straight-through gradients inside the
grid), so a block's weights can be fitted by gradient descent against the float model's output of it;
``tests/test_ptq_block_reconstruction.py`` checks it gives LiteRT's int8 output within one step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.quantize.prepare.activations import TensorTable
from edgeq.tflite import flatbuffer as fb

MAX_LAYERS = 3  # weight layers per block when blocks are plain chains (one inverted residual is one block)
# ops the simulation knows; a block holding any other op is left as it is
OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MUL", "MEAN", "RESHAPE", "AVERAGE_POOL_2D",
       "LOGISTIC", "HARD_SWISH", "RELU", "RELU6", "SOFTMAX", "PAD"}
WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass
class FittedRange:
    """An int8 activation's range as fitted: the INT8 model's own (min, max) scaled by ``exp`` of two fitted log
    factors (``v``, a TensorFlow variable), so every tensor moves by the same relative steps whatever its size."""

    lo: float
    hi: float
    v: object = None

    def bounds(self, tf=None):
        """(min, max): numpy floats without ``tf``, tensors with it."""
        if tf is None:
            f = np.exp(self.v.numpy())
            return float(self.lo * f[0]), float(self.hi * f[1])
        return self.lo * tf.exp(self.v[0]), self.hi * tf.exp(self.v[1])


@dataclass(frozen=True)
class Block:
    """Consecutive ops of the INT8 model that read one tensor and write one."""

    ops: tuple[int, ...]
    inp: int  # tensor index in the INT8 model
    out: int


def blocks(model, max_layers: int = MAX_LAYERS) -> list[Block]:
    """The INT8 model cut where exactly one activation tensor is alive, regrouped into blocks of up to
    ``max_layers`` weight layers (a segment with more stays whole); segments with an op the simulation does
    not know end a block and are left out."""
    sg, names = model.subgraphs[0], fb.op_names(model)
    const = {i for i, t in enumerate(sg.tensors) if fb.raw_data(model, t) is not None}
    last = {}
    for k, op in enumerate(sg.operators):
        for i in (int(i) for i in op.inputs if int(i) >= 0 and int(i) not in const):
            last[i] = k
    for i in sg.outputs:
        last[int(i)] = len(sg.operators)
    live, cuts = {int(i) for i in sg.inputs}, []
    for k, op in enumerate(sg.operators):
        alive = {i for i in live if last.get(i, -1) >= k}
        if len(alive) == 1:
            cuts.append((k, next(iter(alive))))
        live = alive | {int(i) for i in op.outputs}
    end = {int(i) for i in sg.outputs}
    if len(end) == 1:
        cuts.append((len(sg.operators), next(iter(end))))
    found, ops, start, layers = [], [], None, 0
    for (a, t_in), (b, t_out) in zip(cuts, cuts[1:]):
        seg = list(range(a, b))
        n = sum(names[sg.operators[k].opcodeIndex] in WEIGHTED for k in seg)
        if any(names[sg.operators[k].opcodeIndex] not in OPS for k in seg):
            if ops and layers:
                found.append(Block(tuple(ops), start, prev_out))
            ops, start, layers = [], None, 0
            continue
        if ops and layers + n > max_layers and layers:
            found.append(Block(tuple(ops), start, prev_out))
            ops, start, layers = [], None, 0
        if start is None:
            start = t_in
        ops, layers, prev_out = ops + seg, layers + n, t_out
    if ops and layers:
        found.append(Block(tuple(ops), start, prev_out))
    return found


class Simulation:
    """A block of the INT8 model in TensorFlow: float math, each op's output fake-quantized on its grid.
    ``weights`` maps a weight op's index to what is fitted for it (``ints(tf, hard)``, grid step ``s``, bias
    variable ``b`` or None); other weight ops use the INT8 model's own constants. ``ranges`` maps an int8
    tensor's index to its ``FittedRange``; the others keep the INT8 model's grid."""

    def __init__(self, model, block: Block, table: TensorTable, weights: dict[int, _Weights],
                 ranges: dict[int, FittedRange] | None = None):
        import tensorflow as tf

        self.tf, self.model, self.block, self.table, self.weights = tf, model, block, table, weights
        self.sg, self.names, self.ranges = model.subgraphs[0], fb.op_names(model), ranges or {}

    def _fq_fitted(self, r: FittedRange, x):
        """Fake-quantize on a fitted range, as the converter derives scale and zero point from (min, max);
        rounding is straight-through, so the range gets LSQ's gradient (Esser et al. 2020)."""
        tf = self.tf
        lo, hi = r.bounds(tf)
        s = (hi - lo) / 255.0
        z = -128.0 - lo / s
        z = tf.clip_by_value(z + tf.stop_gradient(tf.round(z) - z), -128.0, 127.0)
        v = x / s
        q = tf.clip_by_value(v + tf.stop_gradient(tf.round(v) - v) + z, -128.0, 127.0)
        return (q - z) * s

    def _fq(self, i: int, x):
        tf = self.tf
        if i in self.ranges:
            return self._fq_fitted(self.ranges[i], x)
        if i not in self.table.quantized:
            return x
        s, z = self.table.quantized[i]
        qmin, qmax = (-32768, 32767) if self.sg.tensors[i].type == fb.INT16 else (-128, 127)
        lo_q, hi_q = (qmin - z) * s, (qmax - z) * s
        xc = tf.clip_by_value(x, lo_q, hi_q)  # straight-through inside the grid, no gradient outside
        return xc + tf.stop_gradient((tf.round(xc / s + z) - z) * s - xc)

    def _const(self, i: int):
        """A constant input as float: quantized ones (int8 weights, int32 biases, per channel or not)
        dequantized, shapes and axes as they are."""
        t = self.sg.tensors[i]
        raw = fb.raw_data(self.model, t)
        dtype = {fb.INT8: np.int8, fb.INT16: np.int16, fb.INT32: np.int32, fb.INT64: np.int64,
                 fb.FLOAT32: np.float32}.get(t.type)
        if raw is None or dtype is None:
            raise ValueError(f"input '{fb.name_of(t)}' is neither an activation of the block nor a constant")
        v = np.frombuffer(raw.tobytes(), dtype).reshape(list(t.shape) if t.shape is not None else [])
        q = t.quantization
        if dtype is np.float32 or q is None or q.scale is None or not len(q.scale):
            return v
        shape = [1] * v.ndim
        if len(q.scale) > 1:
            shape[q.quantizedDimension] = -1
        zero = np.zeros(len(q.scale)) if q.zeroPoint is None else np.asarray(q.zeroPoint, np.float64)
        return ((v - zero.reshape(shape)) * np.asarray(q.scale, np.float64).reshape(shape)).astype(np.float32)

    def __call__(self, x, hard: bool = False):
        tf = self.tf
        vals = {self.block.inp: x}
        for k in self.block.ops:
            op = self.sg.operators[k]
            kind = self.names[op.opcodeIndex]
            ins = [vals[int(i)] if int(i) in vals else self._const(int(i)) if int(i) >= 0 else None
                   for i in op.inputs]
            out = int(op.outputs[0])
            vals[out] = self._fq(out, self._op(kind, op, ins, out, k, hard))
        return vals[self.block.out]

    def _op(self, kind: str, op, ins, out: int, k: int, hard: bool):
        tf = self.tf
        o = op.builtinOptions
        if kind in WEIGHTED:
            lw = self.weights.get(k)
            if lw is None:
                w, b = tf.constant(ins[1], tf.float32), None if len(ins) < 3 or ins[2] is None else ins[2]
            else:
                w = lw.ints(tf, hard) * lw.s
                b = lw.b if lw.b is not None else None if len(ins) < 3 else ins[2]
            x = ins[0]
            if kind == "FULLY_CONNECTED":
                y = tf.matmul(tf.reshape(x, [-1, w.shape[1]]), w, transpose_b=True)
            else:
                strides, pad = [1, o.strideH, o.strideW, 1], "SAME" if o.padding == 0 else "VALID"
                dil = [max(o.dilationHFactor, 1), max(o.dilationWFactor, 1)]
                wt = tf.transpose(w, [1, 2, 3, 0])
                y = (tf.nn.conv2d(x, wt, strides, pad, dilations=dil) if kind == "CONV_2D"
                     else tf.nn.depthwise_conv2d(x, wt, strides, pad, dilations=dil))
            if b is not None:
                y = y + b
            y = tf.reshape(y, [-1, *self.sg.tensors[out].shape[1:]]) if kind == "FULLY_CONNECTED" else y
            return self._act(y, o.fusedActivationFunction)
        if kind in ("ADD", "MUL"):
            y = ins[0] + ins[1] if kind == "ADD" else ins[0] * ins[1]
            return self._act(y, o.fusedActivationFunction if o is not None else 0)
        if kind == "MEAN":
            return tf.reduce_mean(ins[0], axis=[int(a) for a in np.ravel(ins[1])], keepdims=bool(o.keepDims))
        if kind == "RESHAPE":
            return tf.reshape(ins[0], [-1, *self.sg.tensors[out].shape[1:]])
        if kind == "AVERAGE_POOL_2D":
            return self._act(tf.nn.avg_pool2d(ins[0], [o.filterHeight, o.filterWidth], [1, o.strideH, o.strideW, 1],
                                              "SAME" if o.padding == 0 else "VALID"), o.fusedActivationFunction)
        if kind == "PAD":
            return tf.pad(ins[0], np.asarray(ins[1]).reshape(-1, 2))
        if kind == "SOFTMAX":
            return tf.nn.softmax(o.beta * ins[0])
        return {"LOGISTIC": tf.sigmoid, "RELU": tf.nn.relu, "RELU6": tf.nn.relu6,
                "HARD_SWISH": lambda v: v * tf.nn.relu6(v + 3) / 6}[kind](ins[0])

    def _act(self, y, code: int):
        tf = self.tf
        if code == 0:
            return y
        if code == 1:
            return tf.nn.relu(y)
        if code == 2:
            return tf.clip_by_value(y, -1.0, 1.0)
        if code == 3:
            return tf.nn.relu6(y)
        raise ValueError(f"fused activation {code}")
