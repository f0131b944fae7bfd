"""How unequal the channels of a float model's linear tensors are: the room per-channel equalization would have.

Runs a float .tflite on a zoo model's first calibration samples and, for every CONV_2D and ADD output without a
fused activation (EfficientNet-Lite's projections and residual sums, its widest int8 tensors), prints the
largest and the median channel peak |x|. Scaling channels toward equal peaks (equalization along the residual
stream) could refine the per-tensor int8 grid of a median channel by at most 20*log10(max/median) dB:
    python -m benchmarks.ptq_diagnosis.stream_spread efficientnet_lite1 /tmp/efficientnet_lite1_fp32.tflite
"""
import argparse
from pathlib import Path

import numpy as np

from benchmarks.ptq_diagnosis.weights_only import CACHE


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    from benchmarks.zoo import data, manifest
    from edgeq.tflite import flatbuffer as fm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model name, e.g. efficientnet_lite1 (its calibration split is used)")
    ap.add_argument("fp32", help="the model's float .tflite (edgeq convert ... --mode fp32)")
    ap.add_argument("--samples", type=int, default=16)
    a = ap.parse_args()
    model = fm.load(Path(a.fp32).read_bytes())
    sg, names = model.subgraphs[0], fm.op_names(model)
    linear = [(k, names[op.opcodeIndex], int(op.outputs[0])) for k, op in enumerate(sg.operators)
              if names[op.opcodeIndex] in ("CONV_2D", "ADD")
              and getattr(op.builtinOptions, "fusedActivationFunction", None) == 0]
    with np.load(data.prepare(manifest.load().model(a.model), CACHE) / "calib_edgeq.npz") as c:
        x = c[c.files[0]].astype(np.float32)[:a.samples].transpose(0, 2, 3, 1)  # NCHW -> edgeq's NHWC
    it = Interpreter(model_path=a.fp32, experimental_preserve_all_tensors=True)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [1, *x.shape[1:]])
    it.allocate_tensors()
    peaks = {t: 0.0 for _, _, t in linear}
    for s in range(len(x)):
        it.set_tensor(inp["index"], x[s:s + 1])
        it.invoke()
        for _, _, t in linear:
            v = it.get_tensor(t)
            peaks[t] = np.maximum(peaks[t], np.abs(v.reshape(-1, v.shape[-1])).max(0))
    ratios = []
    for k, kind, t in linear:
        p = peaks[t]
        ratios.append(p.max() / np.median(p))
        print(f"op {k:3d} {kind:8s} {len(p):4d} channels: peak {p.max():6.2f}, median channel {np.median(p):6.2f}, "
              f"ratio {ratios[-1]:4.1f}", flush=True)
    print(f"{a.model}: {len(linear)} linear tensors, max/median channel peak {min(ratios):.1f} to {max(ratios):.1f} "
          f"(at most {20 * np.log10(max(ratios)):.1f} dB finer grid for a median channel)")


if __name__ == "__main__":
    main()
