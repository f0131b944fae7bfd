"""Post-training INT8 with graph preparation (``--ptq auto``) vs the plain TFLiteConverter (``--ptq plain``).

On the MobileNet-style sample and on the hard sample ``fashion_dwnet`` (depthwise channel ranges over
two decades), per-channel and per-tensor weights: top-1 on the 2,000 held-out test images, top-1
agreement with the float model, whether every op is integer, and which steps auto kept. The hard sample
also as a SavedModel export (no Keras graph: only the flatbuffer steps can run).
"""
from __future__ import annotations

from pathlib import Path

from benchmarks.exports import saved_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("fashion_mobilenet", "fashion_dwnet")


def run(work: Path) -> dict:
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode, PtqChoice

    rows = []
    cases = [(name, "keras", pc) for name in MODELS for pc in (True, False)] + [("fashion_dwnet", "savedmodel", True)]
    for name, kind, per_channel in cases:
        d = ROOT / "sample_models" / name
        keras_file = d / "model.keras"
        source = keras_file if kind == "keras" else saved_model(keras_file, work / f"{name}_savedmodel")
        for choice in (PtqChoice.PLAIN, PtqChoice.AUTO):
            opts = ConvertOptions(mode=Mode.INT8, calib=d / "calib.npz", per_channel=per_channel, ptq=choice)
            out = work / f"{name}_{kind}_{'pc' if per_channel else 'pt'}_{choice.value}.tflite"
            r = convert(source, opts, out=out, eval_data=d / "eval.npz")
            a = r.accuracy
            plan = r.extra.get("ptq", {})
            rows.append({
                "model": name if kind == "keras" else f"{name} (SavedModel)",
                "weights": "per-channel" if per_channel else "per-tensor", "ptq": choice.value,
                "top1": a.top1, "float_top1": a.float_top1, "drop_points": a.drop_points,
                "agreement": a.vs_float.agreement, "sqnr_db": round(a.vs_float.sqnr_db, 2),
                "fully_integer": r.model.fully_integer, "float_ops": len(r.model.float_ops),
                "per_channel_weights": sum(w.per_channel for w in r.model.weights if w.channels > 0),
                "applied": plan.get("applied", []), "convert_s": round(r.timings_s.get("convert", 0.0), 1),
                "summary": plan.get("summary", "")})
    lines = ["## Post-training INT8: `--ptq auto` vs plain TFLiteConverter", "",
             "Full INT8 (int8 I/O), 300 calibration images (train split), top-1 on 2,000 held-out test images.", "",
             "| model | weights | ptq | top-1 % | float % | drop pt | agreement % | all-integer | steps kept |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['weights']} | {r['ptq']} | {100 * r['top1']:.2f} | "
                     f"{100 * r['float_top1']:.2f} | {r['drop_points']:+.2f} | {100 * r['agreement']:.2f} | "
                     f"{'yes' if r['fully_integer'] else 'no'} | {', '.join(r['applied']) or '-'} |")
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}
