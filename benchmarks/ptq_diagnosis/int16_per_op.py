"""Where an INT8 model's activation error sits: each op moved alone to 16-bit activations (docs/ptq.md).

Takes a zoo model's float and INT8 .tflite (e.g. <cache>/work/<model>_{fp32,int8}.tflite), rewrites one op at
a time to LiteRT's 16x8 kernels with ``int16_fallback.to_int16`` (its int8 weights and int32 bias kept, so only
that op's activations change) and scores each variant against the float model on the zoo's eval split. Also
the last k ops together (the logits' own rounding, e.g.). When no op alone gains much, the error is spread
over every activation and a per-layer int16 fallback cannot remove it:
    python -m benchmarks.ptq_diagnosis.int16_per_op efficientnet_lite1 FP32.tflite INT8.tflite [--samples N]
"""
import argparse
from pathlib import Path

from benchmarks.ptq_diagnosis.weights_only import eval_feeds


def main() -> None:
    from benchmarks.ptq_diagnosis.bias_drift_cost import outputs
    from edgeq import metrics
    from edgeq.quantize.int16_fallback import INT16_OPS, to_int16
    from edgeq.quantize.macs import op_records

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model name, e.g. efficientnet_lite1 (its eval split is used)")
    ap.add_argument("fp32")
    ap.add_argument("int8")
    ap.add_argument("--samples", type=int, default=200, help="first N eval samples (default 200)")
    ap.add_argument("--top", type=int, default=15, help="ops listed, most helpful first")
    a = ap.parse_args()
    feeds = eval_feeds(a.model, a.samples)
    int8 = Path(a.int8).read_bytes()
    ref = outputs(Path(a.fp32).read_bytes(), feeds)

    def score(content: bytes) -> tuple[float, float]:
        y = outputs(content, feeds)
        return metrics.agreement(ref, y), metrics.sqnr_db(ref, y)

    base = score(int8)
    print(f"{a.model}: {len(feeds['input'])} eval samples; INT8 agreement {base[0]:.3f}, SQNR {base[1]:.2f} dB")
    ops = [r for r in op_records(content=int8) if r.op in INT16_OPS]
    for k in (1, 3, 10):
        agree, db = score(to_int16(int8, [r.name for r in ops[-k:]]).content)
        print(f"  last {k:2d} ops in int16: agreement {agree:.3f}, SQNR {db:6.2f} dB ({db - base[1]:+.2f})")
    rows = []
    for r in ops:
        agree, db = score(to_int16(int8, [r.name]).content)
        rows.append((db, agree, r))
    print(f"  the {a.top} ops whose int16 activations alone gain most (of {len(ops)}):")
    for db, agree, r in sorted(rows, key=lambda t: -t[0])[:a.top]:
        print(f"    {db - base[1]:+5.2f} dB  agreement {agree:.3f}  {r.op:18s} {r.macs / 1e6:7.1f} M MACs  {r.name[:70]}")


if __name__ == "__main__":
    main()
