"""How much error one layer's per-channel int8 weight grid makes, and whether clipping it would help (docs/ptq.md).

For every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of a float .tflite: the weights' SQNR after
round-to-nearest onto the per-channel int8 grid the converter uses (scale = max|w| / 127), and after the
per-channel clipping that minimizes the weights' squared error (weights_only.nearest_int8's "mse" range search).
Prints the mean per op kind and what summing that many layers' independent errors would leave at the output:
    python -m benchmarks.ptq_diagnosis.weight_grid ~/.cache/edgeq/zoo/work/efficientnet_lite1_fp32.tflite
"""
import argparse
from pathlib import Path

import numpy as np

from benchmarks.ptq_diagnosis.weights_only import AXIS, nearest_int8


def _sqnr_db(w: np.ndarray, q: np.ndarray) -> float:
    w = w.astype(np.float64)
    return 10 * np.log10(np.sum(w ** 2) / np.sum((w - q) ** 2))


def main() -> None:
    from edgeq.tflite import flatbuffer as fm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tflite", help="a float .tflite")
    a = ap.parse_args()
    model = fm.load(Path(a.tflite).read_bytes())
    sg, names = model.subgraphs[0], fm.op_names(model)
    rows = []
    for op in sg.operators:
        kind = names[op.opcodeIndex]
        if kind in AXIS and (w := fm.const(model, sg, int(op.inputs[1]))) is not None:
            rows.append((kind, _sqnr_db(w, nearest_int8(w, AXIS[kind])),
                         _sqnr_db(w, nearest_int8(w, AXIS[kind], "mse"))))
    for kind in AXIS:
        r = np.array([x[1:] for x in rows if x[0] == kind])
        if len(r):
            print(f"{kind}: {len(r)} ops, weight SQNR {r[:, 0].mean():.1f} dB at max scale, {r[:, 1].mean():.1f} dB "
                  f"clipped (best gain {np.max(r[:, 1] - r[:, 0]):.2f} dB)")
    all_db = np.array([x[1] for x in rows])
    summed = -10 * np.log10(np.sum(10 ** (-all_db / 10)))
    print(f"{len(rows)} layers; their relative errors summed at unit gain: {summed:.1f} dB")


if __name__ == "__main__":
    main()
