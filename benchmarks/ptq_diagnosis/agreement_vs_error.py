"""What output SQNR a zoo classifier needs before its top-1 agreement with float reaches a target (issue 14).

Scores each .tflite against onnxruntime on the zoo's eval split, then shrinks each model's own output error
e = y - f by factors a in (0, 1]: f + a*e keeps the error's shape (the classes it pushes, on which crops) at
SQNR + 20*log10(1/a) dB. Where f + a*e first agrees with f often enough, and stays there, is the SQNR the model
would need if its error shrank evenly. Beside it, i.i.d. Gaussian noise at the same SQNR (mean of 20 draws),
the usual stand-in for quantization noise:
    python -m benchmarks.ptq_diagnosis.agreement_vs_error efficientnet_lite1 FP16.tflite INT8.tflite [...]
``--target`` gives the agreements to reach; by default the first file's agreement minus 3 and 6 points
(issue 14's per-channel and per-tensor targets, with the FP16 model first).
"""
import argparse
from pathlib import Path

import numpy as np

from edgeq.metrics import agreement, sqnr_db

STEP_DB = 0.25  # resolution of the SQNR sweep
DRAWS = 20


def scaled_error_curve(ref: np.ndarray, y: np.ndarray, top_db: float) -> list[tuple[float, float]]:
    """(SQNR dB, agreement) of ref + a*(y - ref), from the model's own SQNR up to ``top_db``."""
    base = sqnr_db(ref, y)
    points = []
    for db in np.arange(base, top_db + 1e-9, STEP_DB):
        a = 10 ** (-(db - base) / 20)
        points.append((float(db), agreement(ref, ref + a * (y - ref))))
    return points


def gaussian_agreement(ref: np.ndarray, db: float, seed: int = 0) -> float:
    """Mean agreement of ref + i.i.d. Gaussian noise whose power sits ``db`` below the output's."""
    rng = np.random.default_rng(seed)
    sigma = np.sqrt((ref ** 2).mean() / 10 ** (db / 10))
    return float(np.mean([agreement(ref, ref + rng.normal(0, sigma, ref.shape)) for _ in range(DRAWS)]))


def needed_db(points: list[tuple[float, float]], target: float) -> float | None:
    """The lowest SQNR from which the curve stays at or above ``target``; None if it never gets there."""
    need = None
    for db, agree in reversed(points):
        if agree < target:
            break
        need = db
    return need


def main() -> None:
    from benchmarks.ptq_diagnosis.bias_drift_cost import outputs
    from benchmarks.ptq_diagnosis.weights_only import eval_feeds, onnx_reference

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo classifier name, e.g. efficientnet_lite1")
    ap.add_argument("tflite", nargs="+", help="the model's .tflite files; the first (FP16) sets the default target")
    ap.add_argument("--target", type=float, nargs="+", help="agreements to reach (default: the first file's "
                    "minus --points)")
    ap.add_argument("--points", type=float, nargs="+", default=[3.0, 6.0],
                    help="default targets: this many points below the first file's agreement")
    ap.add_argument("--top-db", type=float, default=45.0, help="highest SQNR of the sweep")
    a = ap.parse_args()
    nhwc = eval_feeds(a.model)
    ref = onnx_reference(a.model, nhwc["input"])
    top2 = np.sort(ref, 1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / np.sqrt((ref ** 2).mean())
    print(f"{a.model}: {len(ref)} eval samples; float top-1/top-2 margin in units of the logits' RMS: "
          f"median {np.median(margin):.3f}, {int((margin < 0.05).sum())} below 0.05, "
          f"{int((margin < 0.2).sum())} below 0.2", flush=True)
    targets = a.target
    for k, path in enumerate(a.tflite):
        y = outputs(Path(path).read_bytes(), nhwc)
        base, agree = sqnr_db(ref, y), agreement(ref, y)
        print(f"{Path(path).name}: agreement {agree:.3f}, SQNR {base:.2f} dB", flush=True)
        if not targets:
            targets = [round(agree - p / 100, 4) for p in a.points]
            print("  targets: " + ", ".join(f"{t:.3f} ({p:g} points below)" for t, p in zip(targets, a.points)))
        if k == 0 and not a.target:
            continue
        curve = scaled_error_curve(ref, y, a.top_db)
        gauss = [(db, gaussian_agreement(ref, db)) for db, _ in curve]
        print("  its error shrunk: " + ", ".join(f"{db:.1f} dB {ag:.3f}" for db, ag in curve[::8]), flush=True)
        print("  i.i.d. noise:     " + ", ".join(f"{db:.1f} dB {ag:.3f}" for db, ag in gauss[::8]), flush=True)
        for t in targets:
            need, need_gauss = needed_db(curve, t), needed_db(gauss, t)
            print(f"  reaches {t:.3f} from: its error shrunk "
                  f"{'never (up to %.0f dB)' % a.top_db if need is None else '%.2f dB' % need}, i.i.d. noise "
                  f"{'never' if need_gauss is None else '%.2f dB' % need_gauss}", flush=True)


if __name__ == "__main__":
    main()
