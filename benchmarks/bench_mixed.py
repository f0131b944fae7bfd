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

from edgeq.convert import quantize_float_model
from edgeq.data import Dataset, load_dataset
from edgeq.modes import ConvertOptions, Fallback, Metric, Mode
from edgeq.progress import Silent
from edgeq.quantize.mixed import quantize_mixed
from edgeq.quantize.sensitivity import metric_loss
from edgeq.runtime import TFLiteRunner
from edgeq.sources import load_float_model

ROOT = Path(__file__).resolve().parents[1]
# (sample, budget in top-1 points, fallback): fashion_dwnet is the hard case (plain INT8 loses points).
CASES = [("fashion_dwnet", 1.0, Fallback.FP16), ("fashion_dwnet", 2.0, Fallback.FP16),
         ("fashion_dwnet", 3.0, Fallback.FP16), ("fashion_dwnet", 2.0, Fallback.FP32),
         ("fashion_mobilenet", 0.0, Fallback.FP16)]
SEARCH_HALF = 1000


def _split(ds: Dataset, n: int) -> tuple[Dataset, Dataset]:
    a = Dataset({k: v[:n] for k, v in ds.inputs.items()}, ds.labels[:n], ds.source)
    b = Dataset({k: v[n:] for k, v in ds.inputs.items()}, ds.labels[n:], ds.source)
    return a, b


def _drop(content: bytes, ds: Dataset, reference: list[np.ndarray]) -> float:
    outs = TFLiteRunner(content=content).run(ds.inputs, batch_size=256)
    return metric_loss(Metric.TOP1, reference, outs, ds.labels)


def run_case(name: str, budget: float, fallback: Fallback) -> dict:
    sample = ROOT / "sample_models" / name
    with load_float_model(sample / "model.keras") as fm:
        calib = load_dataset(sample / "calib.npz", fm.inputs)
        search_ds, confirm_ds = _split(load_dataset(sample / "eval.npz", fm.inputs), SEARCH_HALF)
        ref_search, ref_confirm = fm.predict(search_ds.inputs), fm.predict(confirm_ds.inputs)
        int8_opts = ConvertOptions(mode=Mode.INT8, calib=sample / "calib.npz")
        quantize_float_model(fm, int8_opts, calib, Silent())  # warm-up: TF graph tracing, caches
        int8_times = []
        for _ in range(2):
            t = time.perf_counter()
            int8 = quantize_float_model(fm, int8_opts, calib, Silent())
            int8_times.append(time.perf_counter() - t)
        opts = ConvertOptions(mode=Mode.MIXED, calib=sample / "calib.npz", max_drop=budget, metric=Metric.TOP1,
                              fallback=fallback)
        t = time.perf_counter()
        mixed, plan = quantize_mixed(fm, opts, calib, search_ds, Silent())
        mixed_s = time.perf_counter() - t
        int8_s = statistics.median(int8_times)
        return {
            "sample": name, "budget_pt": budget, "fallback": fallback.value, "met": plan["met"],
            "int8_drop_search": round(_drop(int8, search_ds, ref_search), 2),
            "mixed_drop_search": round(plan["drop"], 2),
            "int8_drop_confirm": round(_drop(int8, confirm_ds, ref_confirm), 2),
            "mixed_drop_confirm": round(_drop(mixed, confirm_ds, ref_confirm), 2),
            "kept": [f"{d['layer']} ({d['precision']})" for d in plan["kept"]], "layers_total": plan["layers_total"],
            "int8_ops_share": plan["int8_ops_share"], "int8_macs_share": plan["int8_macs_share"],
            "size_kib": round(len(mixed) / 1024, 1), "int8_size_kib": round(len(int8) / 1024, 1),
            "int8_convert_s": round(int8_s, 2), "mixed_total_s": round(mixed_s, 2),
            "time_ratio": round(mixed_s / int8_s, 2), "quantizations": plan["quantizations"],
            "summary": plan["summary"],
        }


def run(work: Path) -> dict:
    rows, results = [], []
    for name, budget, fallback in CASES:
        if not (ROOT / "sample_models" / name / "model.keras").exists():
            continue
        r = run_case(name, budget, fallback)
        results.append(r)
        rows.append(f"| {name} | {budget:g} | {r['int8_drop_search']:+.2f} | {r['mixed_drop_search']:+.2f} "
                    f"{'✓' if r['met'] else '✗'} | {r['int8_drop_confirm']:+.2f} / {r['mixed_drop_confirm']:+.2f} | "
                    f"{len(r['kept'])}/{r['layers_total']} {fallback.value} | {100 * r['int8_macs_share']:.1f} | "
                    f"{r['int8_size_kib']} / {r['size_kib']} | {r['int8_convert_s']} / {r['mixed_total_s']} "
                    f"(x{r['time_ratio']}) |")
    kept = "\n".join(f"- {r['sample']} budget {r['budget_pt']:g} ({r['fallback']}): {', '.join(r['kept']) or 'none'}"
                     for r in results)
    md = ("## Mixed precision under an accuracy budget (`edgeq convert --mode mixed`)\n\n"
          "Budget in top-1 points against the float model, enforced on 1,000 held-out test images; the next "
          "1,000 (never seen by the search) confirm it. Time: one full-INT8 conversion (median of 2, after a "
          "warm-up) against the whole mixed search (float reference, one calibration, ranking, verified "
          "candidates), same process.\n\n"
          "| sample | budget pt | INT8 drop | mixed drop | confirm set: INT8 / mixed drop | kept / layers | "
          "MACs in INT8 % | KiB INT8 / mixed | s INT8 / mixed |\n|---|---:|---:|---:|---:|---|---:|---:|---:|\n"
          + "\n".join(rows) + "\n\nLayers kept in higher precision (chosen by measurement):\n\n" + kept + "\n")
    return {"cases": results, "markdown": md}
