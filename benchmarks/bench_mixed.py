"""Mixed precision under an accuracy budget: drop vs budget, share of MACs left in INT8, size, and the
search's wall time against one full-INT8 conversion of the same model, measured in the same process.

The budget is enforced on the first half of each sample's 2,000 held-out test images; the second half
is a confirmation set the search never saw (so the table shows whether the choice generalizes).

A second table measures the all-integer fallback (`--fallback int16`): fashion_dwnet at three budgets (with
the fp16 fallback beside it), and real pretrained models of the zoo (benchmarks/zoo), each converted through
the library API as the zoo converts it, with the zoo's own calibration and eval data. A zoo model missing from
the cache is a row saying what it needs, not a failure.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.exports import saved_model
from benchmarks.zoo import data as zoo_data
from benchmarks.zoo import manifest
from edgeq.api import convert
from edgeq.convert import quantize_float_model
from edgeq.data import Dataset, load_dataset
from edgeq.errors import EdgeqError, first_line
from edgeq.modes import ConvertOptions, Fallback, Metric, Mode, PtqChoice
from edgeq.progress import Silent
from edgeq.quantize.mixed import all_integer, quantize_mixed
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
# The all-integer table: fashion_dwnet at these (budget, fallback), --ptq plain, per-channel (the fp16 rows
# compare); the pairs CASES lacks are run only for that table.
INT16_SAMPLE = "fashion_dwnet"
INT16_SAMPLE_CASES = [(0.5, Fallback.INT16), (1.0, Fallback.INT16), (2.0, Fallback.INT16),
                      (0.5, Fallback.FP16), (1.0, Fallback.FP16)]
# zoo model -> [(metric, budget, ptq)]: --fallback int16 on real pretrained models (benchmarks/zoo). Their
# eval sets are small (48-200 samples), so top-1 moves in steps of 0.5-2 points and sqnr budgets show more.
# `plain` searches from the converter's calibration, `auto` from edgeq's prepared INT8 (its learned rounding).
# efficientnet_lite0 is the slow one (minutes: every candidate runs on LiteRT's reference 16x8 kernels).
ZOO_CASES = {
    "fer_transfer": [(Metric.TOP1, 0.5, PtqChoice.PLAIN)],
    "ppocr_cls": [(Metric.TOP1, 0.5, PtqChoice.PLAIN), (Metric.SQNR, 0.1, PtqChoice.PLAIN)],
    "fer_emotion": [(Metric.SQNR, 0.5, PtqChoice.PLAIN), (Metric.SQNR, 0.2, PtqChoice.PLAIN),
                    (Metric.SQNR, 0.1, PtqChoice.PLAIN), (Metric.SQNR, 0.1, PtqChoice.AUTO)],
    "efficientnet_lite0": [(Metric.AGREEMENT, 0.5, PtqChoice.PLAIN), (Metric.AGREEMENT, 3.0, PtqChoice.AUTO)],
}
METRIC_LABEL = {Metric.TOP1.value: "top-1"}  # as the fashion_dwnet rows write it
DEPENDS = ("benchmarks/zoo/models.toml",)  # read by the zoo manifest, not imported
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
                "drop_int8_plan": round(plan["drop_int8"], 2), "search_s": plan["search_s"],
                "all_integer": all_integer(mixed),
            })
    return out


def run_zoo(name: str, metric: Metric, budget: float, work: Path, ptq: PtqChoice = PtqChoice.PLAIN) -> dict:
    """``convert --mode mixed --fallback int16 --ptq PTQ`` of one zoo model on the zoo's calibration and eval
    data (through the library API, as benchmarks/zoo/item.py converts); all-integer is read from the written
    file."""
    row = {"model": name, "metric": metric.value, "budget": budget, "ptq": ptq.value}
    cache = manifest.cache_dir()
    z = manifest.load().model(name)
    where = zoo_data.ready_dir(z, cache)
    if not z.path(cache).exists() or not (where / "eval_edgeq.npz").exists():
        return {**row, "needs": f"`python -m benchmarks.zoo.fetch --only {name}` (not in the zoo cache)"}
    out = work / f"{name}_mixed_int16_{metric.value}_{budget:g}_{ptq.value}.tflite"
    opts = ConvertOptions(mode=Mode.MIXED, calib=where / "calib_edgeq.npz", max_drop=budget, metric=metric,
                          fallback=Fallback.INT16, ptq=ptq)
    shapes = dict(z.input_shapes) if z.format is manifest.Format.ONNX and z.input_shapes else None
    t = time.perf_counter()
    try:
        report = convert(z.path(cache), opts, out=out, eval_data=where / "eval_edgeq.npz", input_shapes=shapes)
    except EdgeqError as e:
        return {**row, "error": first_line(e)}
    except Exception as e:  # noqa: BLE001 - an edgeq bug is a row of the table, not the end of the bench
        return {**row, "error": f"internal error: {type(e).__name__}: {first_line(e)}"}
    plan = report.extra["mixed"]
    eval_n = len(np.load(where / "eval_edgeq.npz")[z.inputs[0].name])
    return {**row, "met": plan["met"], "drop_int8": round(plan["drop_int8"], 2), "drop": round(plan["drop"], 2),
            "kept": [f"{d['layer']} ({d['op']})" for d in plan["kept"]],
            "layers_total": plan["layers_total"], "int8_macs_share": plan["int8_macs_share"],
            "all_integer": all_integer(out.read_bytes()), "search_s": plan["search_s"],
            "convert_s": round(time.perf_counter() - t, 1), "eval_samples": eval_n,
            "size_kib": round(report.size_bytes / 1024, 1), "summary": plan["summary"]}


def _int16_table(sample_rows: list[dict], zoo_rows: list[dict]) -> str:
    lines = []
    for r in sample_rows:
        label = r["sample"] + ("" if r["fallback"] == "int16" else f", `--fallback {r['fallback']}`")
        lines.append(f"| {label} | plain | top-1 {r['budget_pt']:g} | {r['drop_int8_plan']:+.2f} | "
                     f"{r['mixed_drop_search']:+.2f} {'met' if r['met'] else 'NOT met'} | "
                     f"{r['int8_drop_confirm']:+.2f} / {r['mixed_drop_confirm']:+.2f} | "
                     f"{len(r['kept'])}/{r['layers_total']} | {100 * r['int8_macs_share']:.1f} | "
                     f"{'yes' if r['all_integer'] else 'no'} | {r['search_s']:.1f} |")
    for r in zoo_rows:
        label, budget = f"{r['model']} (pretrained)", f"{METRIC_LABEL.get(r['metric'], r['metric'])} {r['budget']:g}"
        if "needs" in r or "error" in r:
            what = f"needs {r['needs']}" if "needs" in r else r["error"].replace("|", "\\|")
            lines.append(f"| {label} | {r['ptq']} | {budget} | {what} | | | | | | |")
            continue
        lines.append(f"| {label} | {r['ptq']} | {budget} | {r['drop_int8']:+.2f} | {r['drop']:+.2f} "
                     f"{'met' if r['met'] else 'NOT met'} | ({r['eval_samples']} eval samples, no split) | "
                     f"{len(r['kept'])}/{r['layers_total']} | {100 * r['int8_macs_share']:.1f} | "
                     f"{'yes' if r['all_integer'] else 'no'} | {r['search_s']:.1f} |")
    kept = [f"- {r['sample']} top-1 {r['budget_pt']:g} ({r['fallback']}): {', '.join(r['kept']) or 'none'}"
            for r in sample_rows]
    kept += [f"- {r['model']} ptq {r['ptq']} {METRIC_LABEL.get(r['metric'], r['metric'])} {r['budget']:g} (int16): "
             f"{', '.join(r['kept']) or 'none'}" for r in zoo_rows if "kept" in r]
    return ("### All-integer fallback (`--mode mixed --fallback int16`)\n\n"
            "Drops in points of the metric against the float model, on the eval data the budget is enforced on "
            "(fashion_dwnet: 1,000 held-out images, the next 1,000 confirm; zoo models: the zoo's own eval set, "
            "too small to split). `full INT8`: the search's own all-INT8 candidate (`plain`: the converter's "
            "calibration; `auto`: edgeq's prepared INT8, which the search then starts from). "
            "All-integer: no float op in the written model. Search s: the whole mixed run (float reference, "
            "calibration, ranking, verified candidates).\n\n"
            "| model | ptq | metric, budget | full INT8 | mixed | confirm set: INT8 / mixed | kept / layers | "
            "MACs in INT8 % | all-integer | search s |\n"
            "|---|---|---|---:|---:|---:|---|---:|---|---:|\n" + "\n".join(lines) +
            "\n\nLayers kept at 16-bit activations (or fp16, on the fp16 rows):\n\n" + "\n".join(kept) + "\n")


def run(work: Path) -> dict:
    results = []
    for label, cases in CASES.items():
        if label == INT16_SAMPLE:  # the all-integer table's cases ride along (same float model and data)
            cases = cases + [(b, f, PtqChoice.PLAIN, True) for b, f in INT16_SAMPLE_CASES
                             if (b, f, PtqChoice.PLAIN, True) not in cases]
        if (ROOT / "sample_models" / label.split(" ")[0] / "model.keras").exists():
            results += run_sample(label, cases, work)
    int16_rows = [r for r in results if r["sample"] == INT16_SAMPLE and r["ptq"] == PtqChoice.PLAIN.value
                  and r["per_channel"] and (r["budget_pt"], Fallback(r["fallback"])) in INT16_SAMPLE_CASES]
    int16_rows.sort(key=lambda r: (r["fallback"] != Fallback.INT16.value, r["budget_pt"]))
    zoo_rows = [run_zoo(name, metric, budget, work, ptq) for name, cases in ZOO_CASES.items()
                for metric, budget, ptq in cases]
    main = [r for r in results
            if r["sample"] != INT16_SAMPLE or (r["budget_pt"], r["fallback"], r["ptq"], r["per_channel"])
            in {(b, f.value, p.value, c) for b, f, p, c in CASES[INT16_SAMPLE]}]
    rows = [f"| {r['sample']} | {r['ptq']} | {r['budget_pt']:g} | {r['int8_drop_search']:+.2f} | "
            f"{r['mixed_drop_search']:+.2f} {'met' if r['met'] else 'NOT met'} | "
            f"{r['int8_drop_confirm']:+.2f} / {r['mixed_drop_confirm']:+.2f} | "
            f"{len(r['kept'])}/{r['layers_total']} {r['fallback']} | {100 * r['int8_macs_share']:.1f} | "
            f"{r['int8_size_kib']} / {r['size_kib']} | {r['plain_int8_convert_s']} / {r['mixed_total_s']} "
            f"(x{r['ratio_vs_plain_int8']}; x{r['ratio_vs_same_ptq_int8']} of `--mode int8 --ptq {r['ptq']}`) |"
            for r in main]
    kept = "\n".join(f"- {r['sample']} ptq {r['ptq']} budget {r['budget_pt']:g} ({r['fallback']}): "
                     f"{', '.join(r['kept']) or 'none'}" for r in main)
    md = ("## Mixed precision under an accuracy budget (`edgeq convert --mode mixed`)\n\n"
          "Budget in top-1 points against the float model, enforced on 1,000 held-out test images; the next "
          "1,000 (never seen by the search) confirm it. `ptq plain`: the search starts from the converter's own "
          "calibration; `ptq auto`: edgeq's prepared full INT8 is tried first. Time: one plain full-INT8 "
          "conversion (median of 2, after a warm-up) against the whole mixed run (float reference, calibration, "
          "ranking, verified candidates; with `auto`, the graph preparation too), same process.\n\n"
          "| sample | ptq | budget pt | full INT8 drop | mixed drop | confirm set: INT8 / mixed | kept / layers | "
          "MACs in INT8 % | KiB INT8 / mixed | s INT8 / mixed |\n"
          "|---|---|---:|---:|---:|---:|---|---:|---:|---:|\n" + "\n".join(rows) +
          "\n\nLayers kept in higher precision (chosen by measurement):\n\n" + kept + "\n\n" +
          _int16_table(int16_rows, zoo_rows))
    return {"cases": results, "zoo_int16": zoo_rows, "markdown": md}
