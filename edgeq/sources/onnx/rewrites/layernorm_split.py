"""Per-embedding-group LayerNorm: keep BERT's outlier channels out of the int8 residual stream.

BERT-style encoders carry a few residual-stream channels that are one to two orders of magnitude larger
than the rest (all-MiniLM-L6-v2: channel 99 reaches 222 where 99.9% of values stay below 8-23), and
their per-token LayerNorm variance spans 0.4-129. With one int8 scale per tensor the ordinary channels
get a handful of steps and the variance of ordinary tokens rounds to 0 or 1 step: the full-INT8
embedding reached cosine 0.76. Measured by keeping op groups in float: LayerNorm blocks and the dense
layers feeding the residual adds are the whole loss (float there: 0.990).

This rewrite (the per-embedding-group idea of Bondarenko et al., 2021, expressed in ordinary ops) splits
each such LayerNorm's input into two tensors - the outlier channels found on the calibration data, and
the rest - so each gets its own int8 scale:

* the summands are split where they are made: a dense layer ``MatMul(a, W) + b`` becomes two (columns of
  W and b), an embedding ``Gather(T, ids)`` two tables; any other summand is split with ``Gather``;
* the mean and the variance are sums over both parts; squares are summed as per-token dot products
  (``MatMul``), so the int8 square of a deviation never exists, only int32 accumulators;
* normalization runs twice: a coarse pass brings every token's variance near 1, and the second pass,
  whose variances then all lie within a factor of a few, is exact to int8 precision;
* ``gamma``/``beta`` apply per part, the parts are concatenated and put back in channel order.

The result is the same function in float (checked against onnxruntime like every ONNX conversion).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A channel is an outlier when its absmax exceeds OUTLIER_RATIO x the 90th-percentile channel's; outliers
# above FAR_RATIO get a group of their own, so a 12x channel does not share a scale with an 80x one.
OUTLIER_RATIO = 2.5
FAR_RATIO = 16.0
MAX_OUTLIERS = 16  # more than this and the channels are not "a few": leave that LayerNorm alone


@dataclass(frozen=True)
class LayerNormStats:
    """What the calibration inputs showed at one LayerNorm's input."""

    channel_absmax: np.ndarray  # (H,)
    max_variance: float  # largest per-token variance

    def outlier_groups(self) -> list[list[int]]:
        """Outlier channels in groups of similar size (empty when there are none, or too many)."""
        ratio = self.channel_absmax / max(float(np.percentile(self.channel_absmax, 90)), 1e-12)
        near = [int(c) for c in np.flatnonzero((ratio > OUTLIER_RATIO) & (ratio <= FAR_RATIO))]
        far = [int(c) for c in np.flatnonzero(ratio > FAR_RATIO)]
        if len(near) + len(far) > MAX_OUTLIERS:
            return []
        return [g for g in (near, far) if g]


def layernorm_stats(model, feeds: dict[str, np.ndarray]) -> dict[str, LayerNormStats]:
    """Run onnxruntime on ``feeds`` and measure the input of every last-axis LayerNormalization."""
    import onnx
    import onnxruntime as ort

    lns = [n for n in model.graph.node if n.op_type == "LayerNormalization" and _axis(n) == -1]
    if not lns:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for n in lns:
        if n.input[0] not in have:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [n.input[0] for n in lns]
    absmax: list = [None] * len(lns)
    var = [0.0] * len(lns)
    for i in range(len(next(iter(feeds.values())))):  # one sample at a time: exports often fix batch 1
        for k, v in enumerate(sess.run(names, {n: a[i:i + 1] for n, a in feeds.items()})):
            flat = v.reshape(-1, v.shape[-1])
            m = np.abs(flat).max(0)
            absmax[k] = m if absmax[k] is None else np.maximum(absmax[k], m)
            var[k] = max(var[k], float(flat.var(-1).max()))
    return {n.name or n.output[0]: LayerNormStats(absmax[k], var[k]) for k, n in enumerate(lns)}


def split_layernorms(model, stats: dict[str, LayerNormStats]) -> int:
    """Rewrite every LayerNormalization whose input has outlier channels; return how many."""
    g = _Graph(model)
    done = 0
    for ln in [n for n in model.graph.node if n.op_type == "LayerNormalization" and _axis(n) == -1]:
        st = stats.get(ln.name or ln.output[0])
        gamma, beta = g.const(ln.input[1]), g.const(ln.input[2]) if len(ln.input) > 2 else None
        if st is None or gamma is None or (len(ln.input) > 2 and beta is None):
            continue
        outliers = st.outlier_groups()
        if not outliers:
            continue
        width = gamma.shape[-1]
        taken = {c for grp in outliers for c in grp}
        normal = [c for c in range(width) if c not in taken]
        beta = np.zeros(width, np.float32) if beta is None else beta
        eps = next((a.f for a in ln.attribute if a.name == "epsilon"), 1e-5)
        g.rewrite(ln, [normal, *outliers], gamma.reshape(-1), beta.reshape(-1), eps, st.max_variance)
        done += 1
    if done:
        g.finish()
    return done


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), -1)


class _Graph:
    """Node building and the split of summands; new nodes go right before the LayerNorm they replace."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model, self.graph = model, model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.np = numpy_helper
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.users: dict[str, int] = {}
        for n in self.graph.node:
            for i in n.input:
                self.users[i] = self.users.get(i, 0) + 1
        self.pending: list = []
        self.count = 0

    def const(self, name: str):
        if name in self.inits:
            return self.np.to_array(self.inits[name]).astype(np.float32)
        n = self.producer.get(name)
        if n is not None and n.op_type == "Constant":
            return self.np.to_array(n.attribute[0].t).astype(np.float32)
        return None

    def name(self, tag: str) -> str:
        self.count += 1
        return f"edgeq_lnsplit_{self.count}_{tag}"

    def init(self, value, tag: str, dtype=np.float32) -> str:
        name = self.name(tag)
        self.graph.initializer.append(self.np.from_array(np.asarray(value, dtype), name))
        return name

    def node(self, op: str, inputs: list[str], tag: str, **attrs) -> str:
        from onnx import helper

        out = self.name(tag)
        self.pending.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    # -- splitting a summand of the LayerNorm input into channel groups
    def split(self, tensor: str, groups: list[list[int]]) -> list[str]:
        n = self.producer.get(tensor)
        sole = self.users.get(tensor, 0) == 1  # only the add being split reads it: safe to take apart
        if n is not None and sole and n.op_type == "Add":
            consts = [self.const(i) for i in n.input]
            if consts[0] is None and consts[1] is None:
                a, b = (self.split(i, groups) for i in n.input)
                return [self.node("Add", [x, y], "add") for x, y in zip(a, b)]
            k = 0 if consts[0] is not None else 1
            bias, other = consts[k], n.input[1 - k]
            mm = self.producer.get(other)
            weight = self.const(mm.input[1]) if mm is not None and mm.op_type == "MatMul" else None
            if bias is not None and bias.ndim == 1 and weight is not None and weight.ndim == 2 \
                    and self.users.get(other, 0) == 1:
                return [self.node("Add", [self.node("MatMul", [mm.input[0], self.init(weight[:, idx], "w")], "mm"),
                                          self.init(bias[idx], "b")], "dense") for idx in groups]
        if n is not None and sole and n.op_type == "Gather" and not any(a.i for a in n.attribute if a.name == "axis"):
            table = self.const(n.input[0])
            if table is not None and table.ndim == 2:
                return [self.node("Gather", [self.init(table[:, idx], "table"), n.input[1]], "embed") for idx in groups]
        return [self.node("Gather", [tensor, self.init(np.array(idx, np.int64), "idx", np.int64)], "part", axis=-1)
                for idx in groups]

    def dot(self, x: str) -> str:
        """Per-token sum of squares of x (..., k) as a (..., 1) tensor, through a MatMul."""
        minus1, minus2 = self.init([-1], "ax", np.int64), self.init([-2], "ax", np.int64)
        row = self.node("Unsqueeze", [x, minus2], "row")
        col = self.node("Unsqueeze", [x, minus1], "col")
        return self.node("Squeeze", [self.node("MatMul", [row, col], "sq"), minus1], "ss")

    def rewrite(self, ln, groups: list[list[int]], gamma, beta, eps: float, max_var: float) -> None:
        zs = self.split(ln.input[0], groups)
        width = float(len(gamma))
        inv_h, ax = self.init(1.0 / width, "invh"), self.init([-1], "ax", np.int64)
        total = self._sum([self.node("ReduceSum", [p, ax], "sum", keepdims=1) for p in zs])
        mu = self.node("Mul", [total, inv_h], "mean")
        ds = [self.node("Sub", [p, mu], "dev") for p in zs]
        # pass 1: a coarse scale; delta keeps it finite where a small variance rounds to zero
        var1 = self.node("Mul", [self._sum([self.dot(d) for d in ds]), inv_h], "var1")
        r1 = self._rsqrt(var1, max(max_var / 255.0, eps), "r1")
        ys = [self.node("Mul", [d, r1], "y") for d in ds]
        # pass 2: every token's variance is now near 1, so int8 holds it precisely. eps enters here as
        # eps / var1 instead of eps: the same for eps << variance (BERT: 1e-12); the fidelity check bounds it
        var2 = self.node("Mul", [self._sum([self.dot(y) for y in ys]), inv_h], "var2")
        r2 = self._rsqrt(var2, eps, "r2")
        outs = [self.node("Add", [self.node("Mul", [self.node("Mul", [y, r2], "n"), self.init(gamma[idx], "g")], "gn"),
                                  self.init(beta[idx], "be")], "o") for y, idx in zip(ys, groups)]
        cat = self.node("Concat", outs, "cat", axis=-1)
        order = np.argsort(np.concatenate(groups)).astype(np.int64)
        from onnx import helper

        self.pending.append(helper.make_node("Gather", [cat, self.init(order, "perm", np.int64)], [ln.output[0]],
                                             axis=-1))
        at = list(self.graph.node).index(ln)
        self.graph.node.remove(ln)
        for k, n in enumerate(self.pending):
            self.graph.node.insert(at + k, n)
        self.pending = []

    def _sum(self, xs: list[str]) -> str:
        out = xs[0]
        for x in xs[1:]:
            out = self.node("Add", [out, x], "acc")
        return out

    def _rsqrt(self, var: str, add: float, tag: str) -> str:
        root = self.node("Sqrt", [self.node("Add", [var, self.init(add, "eps")], "veps")], "sqrt")
        return self.node("Div", [self.init(1.0, "one"), root], tag)

    def finish(self) -> None:
        """Drop nodes nothing reads any more (the original dense layers, adds and gathers)."""
        outputs = {o.name for o in self.graph.output}
        while True:
            used = {i for n in self.graph.node for i in n.input} | outputs
            dead = [n for n in self.graph.node if n.output and not any(o in used for o in n.output)]
            if not dead:
                break
            for n in dead:
                self.graph.node.remove(n)
        used = {i for n in self.graph.node for i in n.input}
        for init in [i for i in self.graph.initializer if i.name not in used]:
            self.graph.initializer.remove(init)


def split_with_calibration(model, calibration, input_names: list[str], dtypes: dict[str, str],
                           samples: int = 32) -> list[str]:
    """Measure LayerNorm inputs on the first ``samples`` calibration inputs and split where it helps;
    returns report notes. Data that onnxruntime cannot take as-is (another layout) skips the rewrite."""
    if not any(n.op_type == "LayerNormalization" for n in model.graph.node):
        return []
    data = np.load(calibration) if str(calibration).endswith(".npz") else None
    if data is None:
        return []
    keys = list(data.files)
    if set(input_names) <= set(keys):
        feeds = {n: data[n][:samples] for n in input_names}
    elif len(input_names) == 1 and len(keys) == 1:
        feeds = {input_names[0]: data[keys[0]][:samples]}
    else:
        return []
    feeds = {n: v.astype(dtypes.get(n, "float32")) for n, v in feeds.items()}
    try:
        stats = layernorm_stats(model, feeds)
    except Exception as exc:  # noqa: BLE001 - a measurement for an optional rewrite; say why it was skipped
        from edgeq.errors import first_line

        return [f"LayerNorm outlier split skipped: onnxruntime could not run the calibration data ({first_line(exc)[:80]})"]
    groups = {k: [c for grp in s.outlier_groups() for c in grp] for k, s in stats.items()}
    done = split_layernorms(model, stats)
    if not done:
        return []
    chans = sorted({c for v in groups.values() for c in v})
    return [f"{done} LayerNorm(s) split into outlier and ordinary channel groups for int8 (outlier channels "
            f"{', '.join(map(str, chans[:8]))}{' ...' if len(chans) > 8 else ''}, found on {len(next(iter(feeds.values())))}"
            " calibration inputs); same function in float"]
