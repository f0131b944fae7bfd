"""Mixed precision under an accuracy budget: drop vs budget, share of MACs left in INT8, size, and the
search's wall time against one full-INT8 conversion of the same model, measured in the same process.

The budget is enforced on the first half of each sample's 2,000 held-out test images; the second half
is a confirmation set the search never saw (so the table shows whether the choice generalizes).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.exports import saved_model
from edgeq.convert import quantize_float_model
from edgeq.data import Dataset, load_dataset
from edgeq.modes import ConvertOptions, Fallback, Metric, Mode, PtqChoice
from edgeq.progress import Silent
from edgeq.quantize.mixed import quantize_mixed
from edgeq.quantize.sensitivity import metric_loss
from edgeq.runtime import TFLiteRunner
from edgeq.sources import load_float_model

ROOT = Path(__file__).resolve().parents[1]
# sample -> [(budget in top-1 points, fallback, ptq, per_channel)]. fashion_dwnet is the hard case:
# the converter's plain calibration loses points on it; edgeq's graph preparation (--ptq auto) recovers them.
CASES = {
    "fashion_dwnet": [(1.0, Fallback.FP16, PtqChoice.PLAIN, True), (2.0, Fallback.FP16, PtqChoice.PLAIN, True),
                      (3.0, Fallback.FP16, PtqChoice.PLAIN, True), (2.0, Fallback.FP32, PtqChoice.PLAIN, True),
                      (1.0, Fallback.FP16, PtqChoice.AUTO, True)],
    # The same model handed over as a SavedModel (e.g. from another team's pipeline): graph preparation needs
    # the Keras model, so only ranges are tuned and the per-layer fallback has to close the gap.
    "fashion_dwnet (SavedModel)": [(1.0, Fallback.FP16, PtqChoice.AUTO, True)],
    "fashion_mobilenet": [(0.0, Fallback.FP16, PtqChoice.PLAIN, True)],
}
SEARCH_HALF = 1000


def _split(ds: Dataset, n: int) -> tuple[Dataset, Dataset]:
    a = Dataset({k: v[:n] for k, v in ds.inputs.items()}, ds.labels[:n], ds.source)
    b = Dataset({k: v[n:] for k, v in ds.inputs.items()}, ds.labels[n:], ds.source)
    return a, b


def _drop(content: bytes, ds: Dataset, reference: list[np.ndarray]) -> float:
    outs = TFLiteRunner(content=content).run(ds.inputs, batch_size=256)
    return round(metric_loss(Metric.TOP1, reference, outs, ds.labels), 2)


def _int8(fm, calib, sample: Path, ptq: PtqChoice, per_channel: bool, repeats: int) -> tuple[bytes, float]:
    opts = ConvertOptions(mode=Mode.INT8, calib=sample / "calib.npz", ptq=ptq, per_channel=per_channel)
    times, content = [], b""
    for _ in range(repeats):
        t = time.perf_counter()
        content = quantize_float_model(fm, opts, calib, Silent())
        times.append(time.perf_counter() - t)
    return content, statistics.median(times)


def _model_path(label: str, work: Path) -> Path:
    """The sample's .keras file, or a SavedModel exported from it for the '(SavedModel)' cases."""
    name = label.split(" ")[0]
    keras_file = ROOT / "sample_models" / name / "model.keras"
    if "SavedModel" not in label:
        return keras_file
    return saved_model(keras_file, work / f"{name}_savedmodel")


def run_sample(label: str, cases: list, work: Path) -> list[dict]:
    name = label.split(" ")[0]
    sample = ROOT / "sample_models" / name
    out = []
    with load_float_model(_model_path(label, work)) as fm:
        calib = load_dataset(sample / "calib.npz", fm.inputs)
        search_ds, confirm_ds = _split(load_dataset(sample / "eval.npz", fm.inputs), SEARCH_HALF)
        ref_s, ref_c = fm.predict(search_ds.inputs), fm.predict(confirm_ds.inputs)
        _int8(fm, calib, sample, PtqChoice.PLAIN, True, 1)  # warm-up: TF graph tracing, caches
        baselines = {}
        for budget, fallback, ptq, per_channel in cases:
            key = (ptq, per_channel)
            if key not in baselines:
                content, seconds = _int8(fm, calib, sample, ptq, per_channel, 2 if ptq is PtqChoice.PLAIN else 1)
                baselines[key] = (content, seconds, _drop(content, search_ds, ref_s), _drop(content, confirm_ds, ref_c))
            int8, int8_s, int8_drop_s, int8_drop_c = baselines[key]
            plain_key = (PtqChoice.PLAIN, per_channel)
            if plain_key not in baselines:  # the time reference is always one plain INT8 conversion
                content, seconds = _int8(fm, calib, sample, PtqChoice.PLAIN, per_channel, 2)
                baselines[plain_key] = (content, seconds, None, None)
            plain_s = baselines[plain_key][1]
            opts = ConvertOptions(mode=Mode.MIXED, calib=sample / "calib.npz", max_drop=budget, metric=Metric.TOP1,
                                  fallback=fallback, ptq=ptq, per_channel=per_channel)
            t = time.perf_counter()
            mixed, plan = quantize_mixed(fm, opts, calib, search_ds, Silent())
            mixed_s = time.perf_counter() - t
            out.append({
                "sample": label, "budget_pt": budget, "fallback": fallback.value, "ptq": ptq.value,
                "per_channel": per_channel, "met": plan["met"],
                "int8_drop_search": int8_drop_s, "mixed_drop_search": round(plan["drop"], 2),
                "int8_drop_confirm": int8_drop_c, "mixed_drop_confirm": _drop(mixed, confirm_ds, ref_c),
                "kept": [f"{d['layer']} ({d['precision']})" for d in plan["kept"]],
                "layers_total": plan["layers_total"], "int8_ops_share": plan["int8_ops_share"],
                "int8_macs_share": plan["int8_macs_share"], "size_kib": round(len(mixed) / 1024, 1),
                "int8_size_kib": round(len(int8) / 1024, 1), "int8_convert_s": round(int8_s, 2),
                "plain_int8_convert_s": round(plain_s, 2), "mixed_total_s": round(mixed_s, 2),
                "ratio_vs_plain_int8": round(mixed_s / plain_s, 2),
                "ratio_vs_same_ptq_int8": round(mixed_s / int8_s, 2),
                "quantizations": plan["quantizations"], "summary": plan["summary"],
            })
    return out


def run(work: Path) -> dict:
    results = []
    for label, cases in CASES.items():
        if (ROOT / "sample_models" / label.split(" ")[0] / "model.keras").exists():
            results += run_sample(label, cases, work)
    rows = [f"| {r['sample']} | {r['ptq']} | {r['budget_pt']:g} | {r['int8_drop_search']:+.2f} | "
            f"{r['mixed_drop_search']:+.2f} {'met' if r['met'] else 'NOT met'} | "
            f"{r['int8_drop_confirm']:+.2f} / {r['mixed_drop_confirm']:+.2f} | "
            f"{len(r['kept'])}/{r['layers_total']} {r['fallback']} | {100 * r['int8_macs_share']:.1f} | "
            f"{r['int8_size_kib']} / {r['size_kib']} | {r['plain_int8_convert_s']} / {r['mixed_total_s']} "
            f"(x{r['ratio_vs_plain_int8']}; x{r['ratio_vs_same_ptq_int8']} of `--mode int8 --ptq {r['ptq']}`) |"
            for r in results]
    kept = "\n".join(f"- {r['sample']} ptq {r['ptq']} budget {r['budget_pt']:g} ({r['fallback']}): "
                     f"{', '.join(r['kept']) or 'none'}" for r in results)
    md = ("## Mixed precision under an accuracy budget (`edgeq convert --mode mixed`)\n\n"
          "Budget in top-1 points against the float model, enforced on 1,000 held-out test images; the next "
          "1,000 (never seen by the search) confirm it. `ptq plain`: the search starts from the converter's own "
          "calibration; `ptq auto`: edgeq's prepared full INT8 is tried first. Time: one plain full-INT8 "
          "conversion (median of 2, after a warm-up) against the whole mixed run (float reference, calibration, "
          "ranking, verified candidates; with `auto`, the graph preparation too), same process.\n\n"
          "| sample | ptq | budget pt | full INT8 drop | mixed drop | confirm set: INT8 / mixed | kept / layers | "
          "MACs in INT8 % | KiB INT8 / mixed | s INT8 / mixed |\n"
          "|---|---|---:|---:|---:|---:|---|---:|---:|---:|\n" + "\n".join(rows) +
          "\n\nLayers kept in higher precision (chosen by measurement):\n\n" + kept + "\n")
    return {"cases": results, "markdown": md}
