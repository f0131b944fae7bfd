"""How much error one layer's per-channel int8 weight grid makes, and whether clipping it would help (docs/ptq.md).

For every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED of a float .tflite: the weights' SQNR after
round-to-nearest onto the per-channel int8 grid the converter uses (scale = max|w| / 127), and after the
per-channel clipping that minimizes the weights' squared error (scale times 0.30..1.00, 36 steps). Prints the
mean per op kind and what summing that many layers' independent errors would leave at the output:
    python benchmarks/ptq_diagnosis/weight_grid.py ~/.cache/edgeq/zoo/work/efficientnet_lite1_fp32.tflite
"""
import argparse

import numpy as np

KINDS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def _sq_err(w: np.ndarray, scale: float) -> float:
    return float(np.sum((w - np.clip(np.round(w / scale), -127, 127) * scale) ** 2))


def layer_sqnr(w: np.ndarray) -> tuple[float, float]:
    """(max-scale SQNR, best-clip SQNR) in dB of one layer's weights, output channels first."""
    sig = e_max = e_clip = 0.0
    for c in w.reshape(len(w), -1).astype(np.float64):
        m = np.abs(c).max()
        if m == 0:
            continue
        sig += float(np.sum(c ** 2))
        e_max += _sq_err(c, m / 127)
        e_clip += min(_sq_err(c, a * m / 127) for a in np.linspace(0.3, 1.0, 36))
    return 10 * np.log10(sig / e_max), 10 * np.log10(sig / e_clip)


def main() -> None:
    from ai_edge_litert.interpreter import Interpreter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tflite", help="a float .tflite")
    a = ap.parse_args()
    it = Interpreter(model_path=a.tflite)
    it.allocate_tensors()
    rows = []
    for op in it._get_ops_details():
        if op["op_name"] not in KINDS:
            continue
        w = it.get_tensor(op["inputs"][1])
        if op["op_name"] == "DEPTHWISE_CONV_2D":  # (1, kh, kw, C): channels last
            w = np.moveaxis(w, -1, 0)
        rows.append((op["op_name"], *layer_sqnr(w)))
    for kind in KINDS:
        r = np.array([x[1:] for x in rows if x[0] == kind])
        if len(r):
            print(f"{kind}: {len(r)} ops, weight SQNR {r[:, 0].mean():.1f} dB at max scale, {r[:, 1].mean():.1f} dB "
                  f"clipped (best gain {np.max(r[:, 1] - r[:, 0]):.2f} dB)")
    all_db = np.array([x[1] for x in rows])
    summed = -10 * np.log10(np.sum(10 ** (-all_db / 10)))
    print(f"{len(rows)} layers; their relative errors summed at unit gain: {summed:.1f} dB")


if __name__ == "__main__":
    main()
