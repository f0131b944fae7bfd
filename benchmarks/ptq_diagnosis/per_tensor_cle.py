"""Where per-tensor INT8 weights lose, and what cross-layer equalization through ReLU6 could win back (docs/ptq.md).

Scores a float .tflite on a zoo model's eval split with float activations and its weights changed, one
variant per line:
  per-tensor nearest        every weighted op's weights rounded to one symmetric int8 scale (max|w| / 127)
  per-tensor MSE-clipped    the same with the scale among 50-100% of the peak that minimizes the squared error
  ReLU6 -> ReLU             no rounding; every fused ReLU6 made a ReLU (what Nagel et al.'s DFQ does first)
  CLE, clips kept exact     cross-layer equalization (DFQ) over every conv/depthwise -> weighted op pair, the
                            scaled weights rounded per tensor and scaled back: what the model would give if each
                            ReLU6 clip moved with its channel (6 / s_c), which one fused ReLU6 cannot do
  CLE, fused ReLU6 kept     the scaled weights and biases written into the model as they are (float, then
                            per-tensor rounded): the clips stay at 6 in the scaled units
  CLE with MINIMUM clips    the scaled model made exact again: fused ReLU, then MINIMUM(x, 6 / s_c) (--write
                            saves it; --int8 scores its conversions)
    python -m benchmarks.ptq_diagnosis.per_tensor_cle efficientnet_lite0 /tmp/efficientnet_lite0_fp32.tflite
"""
import argparse
from pathlib import Path

import numpy as np

from benchmarks.ptq_diagnosis.weights_only import AXIS, eval_feeds, nearest_int8

IN_AXIS = {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 1}  # the weights' input-channel axis
RELU, RELU6 = 1, 3  # tflite ActivationFunctionType
SWEEPS = 20


def per_tensor(w: np.ndarray, clip: bool = False) -> np.ndarray:
    """``w`` rounded to nearest on one symmetric int8 grid (``clip``: the range of least squared error)."""
    return nearest_int8(w[None], 0, "mse" if clip else "max")[0]  # one "channel": the whole tensor


def _channel_peak(w: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)).max(1) + 1e-12


def _along(v: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    return v.reshape(shape)


class Equalization:
    """DFQ's scales for every pair P -> Q where P (conv or depthwise) has one reader Q, a weighted op taking P's
    output as its data input: P's output channel c divided by s_c, Q's input channel c multiplied by it."""

    def __init__(self, model, bound: float = 1e3):
        from edgeq.tflite import flatbuffer as fm

        sg, names = model.subgraphs[0], fm.op_names(model)
        self.kind = {k: names[op.opcodeIndex] for k, op in enumerate(sg.operators)
                     if names[op.opcodeIndex] in AXIS and fm.const(model, sg, int(op.inputs[1])) is not None}
        self.w = {k: fm.const(model, sg, int(sg.operators[k].inputs[1])).astype(np.float64) for k in self.kind}
        readers = fm.readers(sg)
        self.pairs = []
        for p in self.kind:
            out = int(sg.operators[p].outputs[0])
            r = readers.get(out, [])
            if self.kind[p] != "FULLY_CONNECTED" and len(r) == 1 and r[0] in self.kind \
                    and int(sg.operators[r[0]].inputs[0]) == out \
                    and self.w[p].shape[AXIS[self.kind[p]]] == self.w[r[0]].shape[IN_AXIS[self.kind[r[0]]]]:
                # (a depthwise reader with a channel multiplier above 1 is left out)
                self.pairs.append((p, r[0]))
        self.s_out = {k: np.ones(w.shape[AXIS[self.kind[k]]]) for k, w in self.w.items()}
        self.s_in = {k: np.ones(w.shape[IN_AXIS[self.kind[k]]]) for k, w in self.w.items()}
        for _ in range(SWEEPS):  # a layer in two pairs (a depthwise between two 1x1) needs a few rounds
            for p, q in self.pairs:
                s = np.sqrt(_channel_peak(self.scaled(p), AXIS[self.kind[p]])
                            / _channel_peak(self.scaled(q), IN_AXIS[self.kind[q]]))
                # bounded: a channel with near-zero weights would otherwise grow without end
                self.s_out[p] = self.s_in[q] = np.clip(self.s_out[p] * s, 1 / bound, bound)

    def scaled(self, k: int) -> np.ndarray:
        w, kind = self.w[k], self.kind[k]
        return w / _along(self.s_out[k], w, AXIS[kind]) * _along(self.s_in[k], w, IN_AXIS[kind])

    def unscaled(self, k: int, scaled: np.ndarray) -> np.ndarray:
        w, kind = self.w[k], self.kind[k]
        return scaled * _along(self.s_out[k], w, AXIS[kind]) / _along(self.s_in[k], w, IN_AXIS[kind])


def _with_weights(fp32: bytes, weights, biases_divided_by: dict | None = None) -> bytes:
    """``fp32`` with op k's weights replaced by ``weights(k, w)``; biases divided by the given scales."""
    from edgeq.tflite import flatbuffer as fm

    model = fm.load(fp32)
    sg, names = model.subgraphs[0], fm.op_names(model)
    for k, op in enumerate(sg.operators):
        if names[op.opcodeIndex] not in AXIS or (w := fm.const(model, sg, int(op.inputs[1]))) is None:
            continue
        op.inputs[1] = fm.new_const(model, sg, int(op.inputs[1]), weights(k, w).astype(np.float32), "/pt")
        if biases_divided_by is not None and len(op.inputs) > 2 and int(op.inputs[2]) >= 0:
            b = fm.const(model, sg, int(op.inputs[2]))
            op.inputs[2] = fm.new_const(model, sg, int(op.inputs[2]),
                                        (b / biases_divided_by[k]).astype(np.float32), "/pt")
    return fm.dump(model)


def equalized(fp32: bytes, eq: Equalization) -> bytes:
    """``fp32`` with ``eq``'s scales applied exactly: each equalized ReLU6 producer gets a fused ReLU and a
    MINIMUM against its channels' clips 6 / s_c before its reader."""
    from edgeq.tflite import flatbuffer as fm

    model = fm.load(_with_weights(fp32, lambda k, w: eq.scaled(k), eq.s_out))
    sg, sc = model.subgraphs[0], fm.schema()
    minimum, reader = fm.opcode_index(model, sc.BuiltinOperator.MINIMUM), dict(eq.pairs)
    ops = []
    for k, op in enumerate(sg.operators):
        ops.append(op)
        if k not in reader or getattr(op.builtinOptions, "fusedActivationFunction", None) != RELU6:
            continue
        op.builtinOptions.fusedActivationFunction = RELU
        out = int(op.outputs[0])
        clipped = fm.tensor_like(sg, sg.tensors[out], fm.tensor_name(sg, out) + "/clip")
        clip = fm.new_const(model, sg, int(op.inputs[2]), (6.0 / eq.s_out[k]).astype(np.float32), "/clip")
        m = sc.OperatorT()
        m.opcodeIndex, m.inputs, m.outputs = minimum, np.array([out, clip], np.int32), np.array([clipped], np.int32)
        m.builtinOptionsType, m.builtinOptions = sc.BuiltinOptions.MaximumMinimumOptions, sc.MaximumMinimumOptionsT()
        ops.append(m)
        sg.operators[reader[k]].inputs[0] = clipped
    sg.operators = ops
    return fm.dump(model)


def _relu6_as_relu(fp32: bytes) -> tuple[bytes, int]:
    from edgeq.tflite import flatbuffer as fm

    model, n = fm.load(fp32), 0
    for op in model.subgraphs[0].operators:
        if getattr(op.builtinOptions, "fusedActivationFunction", None) == RELU6:
            op.builtinOptions.fusedActivationFunction = RELU
            n += 1
    return fm.dump(model), n


def main() -> None:
    from benchmarks.ptq_diagnosis.bias_drift_cost import outputs
    from edgeq import metrics
    from edgeq.tflite import flatbuffer as fm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model name, e.g. efficientnet_lite0 (its eval split is used)")
    ap.add_argument("fp32", help="the model's float .tflite (edgeq convert ... --mode fp32)")
    ap.add_argument("--write", type=Path, metavar="OUT",
                    help="also write the equalized float model with its MINIMUM clips (a source for edgeq convert)")
    ap.add_argument("--int8", type=Path, nargs="*", default=[],
                    help="also score these .tflite files (e.g. INT8 conversions of --write's model) against fp32")
    a = ap.parse_args()
    feeds = eval_feeds(a.model)
    fp32 = Path(a.fp32).read_bytes()
    ref = outputs(fp32, feeds)

    def score(label: str, content: bytes) -> None:
        y = outputs(content, feeds)
        print(f"  {label:58s} agreement {metrics.agreement(ref, y):.3f}  SQNR {metrics.sqnr_db(ref, y):6.2f} dB",
              flush=True)

    print(f"{a.model}: {len(feeds['input'])} eval samples, float activations, scored against {Path(a.fp32).name}")
    score("per-tensor nearest", _with_weights(fp32, lambda k, w: per_tensor(w)))
    score("per-tensor MSE-clipped", _with_weights(fp32, lambda k, w: per_tensor(w, clip=True)))
    relu, n = _relu6_as_relu(fp32)
    score(f"ReLU6 -> ReLU ({n} ops), float weights", relu)
    eq = Equalization(fm.load(fp32))
    spread = max(float(np.ptp(np.log10(eq.s_out[p]))) for p, _ in eq.pairs)
    print(f"  CLE: {len(eq.pairs)} pairs, {SWEEPS} sweeps, scales within [1e-3, 1e3] "
          f"(widest spread in one layer: {spread:.1f} decades)")
    score("CLE, clips kept exact, per-tensor nearest",
          _with_weights(fp32, lambda k, w: eq.unscaled(k, per_tensor(eq.scaled(k)))))
    score("CLE, fused ReLU6 kept, float weights", _with_weights(fp32, lambda k, w: eq.scaled(k), eq.s_out))
    score("CLE, fused ReLU6 kept, per-tensor nearest",
          _with_weights(fp32, lambda k, w: per_tensor(eq.scaled(k)), eq.s_out))
    exact = equalized(fp32, eq)
    score("CLE with MINIMUM clips, float weights", exact)
    if a.write:
        a.write.write_bytes(exact)
    for path in a.int8:
        score(f"{path.name} (its own activations)", path.read_bytes())


if __name__ == "__main__":
    main()
