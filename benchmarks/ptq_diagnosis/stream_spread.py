"""How unequal the channels of a float model's residual streams are, and that stream equalized (docs/ptq.md).

A residual stream is a set of tensors joined by ADDs (no fused activation) and written by convolutions without
one: EfficientNet-Lite's projections and residual sums, its widest int8 tensors. Where every reader of the set
is a convolution or dense layer taking it as data input (or an ADD inside it), channel c can be multiplied by
s_c in every producer (weights and bias) and divided back in every reader's weights: the float function is
unchanged and the per-tensor int8 grid fits the channels better. Runs a float .tflite on a zoo model's
calibration split, prints each stream's largest and median channel peak, and with ``--write`` saves the model
with s_c = (largest peak / channel peak) ** alpha, a source for ``edgeq convert``:
    python -m benchmarks.ptq_diagnosis.stream_spread efficientnet_lite1 FP32.tflite [--alpha 0.5 --write EQ.tflite]
"""
import argparse
from pathlib import Path

import numpy as np

from benchmarks.ptq_diagnosis.weights_only import split_feeds


def streams(model) -> list[set[int]]:
    """The residual streams of ``model`` (sets of tensor indices) that can be scaled per channel exactly."""
    from edgeq.tflite import flatbuffer as fm

    sg, names = model.subgraphs[0], fm.op_names(model)
    ops, readers = sg.operators, fm.readers(sg)
    producer = {int(op.outputs[0]): k for k, op in enumerate(ops)}
    parent: dict[int, int] = {}

    def root(t: int) -> int:
        while parent.get(t, t) != t:
            t = parent[t]
        return t

    def linear(op) -> bool:
        return getattr(op.builtinOptions, "fusedActivationFunction", None) == 0

    members = set()
    for op in ops:
        kind = names[op.opcodeIndex]
        if kind == "CONV_2D" and linear(op):
            members.add(int(op.outputs[0]))
        elif kind == "ADD" and linear(op) and all(fm.const(model, sg, int(i)) is None for i in op.inputs):
            members.add(int(op.outputs[0]))
            for i in op.inputs:
                parent[root(int(i))] = root(int(op.outputs[0]))
    groups: dict[int, set[int]] = {}
    for t in members:
        groups.setdefault(root(t), set()).add(t)
    out = []
    for g in groups.values():
        def written_ok(t: int) -> bool:
            p = ops[producer[t]] if t in producer else None
            return p is not None and linear(p) and (names[p.opcodeIndex] == "CONV_2D" or (
                names[p.opcodeIndex] == "ADD" and all(int(i) in g for i in p.inputs)))

        def read_ok(t: int) -> bool:
            return all((names[ops[r].opcodeIndex] == "ADD" and int(ops[r].outputs[0]) in g)
                       or (names[ops[r].opcodeIndex] in ("CONV_2D", "FULLY_CONNECTED")
                           and int(ops[r].inputs[0]) == t) for r in readers.get(t, []))
        if all(written_ok(t) and read_ok(t) for t in g):
            out.append(g)
    return out


def stream_peaks(content: bytes, groups: list[set[int]], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per-channel max |value| of each stream over its tensors and the samples of ``feeds``."""
    from edgeq.quantize.prepare.activations import run_each_sample

    peaks = [np.zeros(1) for _ in groups]
    for values in run_each_sample(content, feeds, sorted(t for g in groups for t in g)):
        for k, g in enumerate(groups):
            for t in g:
                peaks[k] = np.maximum(peaks[k], np.abs(values[t].reshape(-1, values[t].shape[-1])).max(0))
    return peaks


def equalize(model, groups: list[set[int]], peaks: list[np.ndarray], alpha: float) -> None:
    """Scale each stream's channel c by s_c = (max peak / peak_c) ** alpha in its producers, 1 / s_c in its
    readers' weights (in place)."""
    from edgeq.tflite import flatbuffer as fm

    sg, names = model.subgraphs[0], fm.op_names(model)
    ops, readers = sg.operators, fm.readers(sg)
    producer = {int(op.outputs[0]): k for k, op in enumerate(ops)}
    for g, peak in zip(groups, peaks):
        peak = peak + 1e-6
        s = (peak.max() / peak) ** alpha
        for t in sorted(g):
            op = ops[producer[t]]
            if names[op.opcodeIndex] == "CONV_2D":  # weights OHWI, bias per output channel
                w, b = fm.const(model, sg, int(op.inputs[1])), fm.const(model, sg, int(op.inputs[2]))
                op.inputs[1] = fm.new_const(model, sg, int(op.inputs[1]),
                                            (w * s.reshape(-1, 1, 1, 1)).astype(np.float32), "/stream")
                op.inputs[2] = fm.new_const(model, sg, int(op.inputs[2]), (b * s).astype(np.float32), "/stream")
            for r in readers.get(t, []):
                if names[ops[r].opcodeIndex] == "ADD":
                    continue
                w = fm.const(model, sg, int(ops[r].inputs[1]))  # CONV_2D OHWI / FULLY_CONNECTED (out, in)
                shape = [1] * w.ndim
                shape[-1] = -1
                ops[r].inputs[1] = fm.new_const(model, sg, int(ops[r].inputs[1]),
                                                (w / s.reshape(shape)).astype(np.float32), "/stream")


def main() -> None:
    from edgeq.tflite import flatbuffer as fm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model name, e.g. efficientnet_lite1 (its calibration split is used)")
    ap.add_argument("fp32", help="the model's float .tflite (edgeq convert ... --mode fp32)")
    ap.add_argument("--alpha", type=float, default=0.5, help="migration strength of --write (0: none, 1: full)")
    ap.add_argument("--write", type=Path, metavar="OUT", help="write the stream-equalized float model")
    a = ap.parse_args()
    content = Path(a.fp32).read_bytes()
    model = fm.load(content)
    groups = streams(model)
    feeds = split_feeds(a.model, "calib")
    peaks = stream_peaks(content, groups, feeds)
    ratios = []
    for g, peak in zip(groups, peaks):
        ratios.append(peak.max() / np.median(peak))
        print(f"stream of {len(g)} tensors, {len(peak)} channels: peak {peak.max():6.2f}, median channel "
              f"{np.median(peak):6.2f}, ratio {ratios[-1]:4.1f}", flush=True)
    print(f"{a.model}: {len(groups)} streams, {sum(len(g) for g in groups)} tensors, max/median channel peak "
          f"{min(ratios):.1f} to {max(ratios):.1f} on {len(feeds['input'])} calibration samples")
    if a.write:
        equalize(model, groups, peaks, a.alpha)
        a.write.write_bytes(fm.dump(model))
        print(f"wrote {a.write} (alpha {a.alpha:g})")


if __name__ == "__main__":
    main()
