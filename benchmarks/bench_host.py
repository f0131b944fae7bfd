"""edgeq bench on the host against LiteRT's own `litert-benchmark`, side by side, and edgeq bench's overhead.

Models: the sample models' fp32 and int8 conversions, and a 224x224 MobileNetV2 (random weights, a size
stand-in). For each model and thread count, ROUNDS interleaved rounds; in each round every tool runs once, in a
fresh process pinned with `taskset` to the same CPUs (core 1 for one thread, cores 0-1 for two), the tools'
order rotated round by round so that load changes hit each alike:

- edgeq's host worker on the pinned ai-edge-litert (what `edgeq bench` runs),
- edgeq's host worker on the reference runtime (the same Python code, the side venv's ai-edge-litert),
- `litert-benchmark`, the console script of ai-edge-litert >= 2.3 (CompiledModel API), from that side venv.

The claim compares edgeq and litert-benchmark on the same runtime, round by round (paired ratios), and is made
only where every round's ratio lies inside the 5% band; rows whose rounds straddle it, or whose latency is
below litert-benchmark's 0.01 ms print resolution, say so instead. The side venv is made by ``side_env`` (pip
from the package registry); without it the table says "needs ...".
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import side_env

ROOT = Path(__file__).resolve().parents[1]
DEPENDS = ("edgeq/cli", "edgeq/bench", "benchmarks/side_env.py")  # run as subprocesses, not imported
SAMPLES = ("fashion_cnn", "fashion_mobilenet")
MODES = ("fp32", "int8")
THREADS = (1, 2)
RUNS, WARMUP, ROUNDS = 200, 10, 5
BAND_PCT = 5.0  # the claim under test: edgeq's p50 within 5% of litert-benchmark's
CPUS = {1: "1", 2: "0,1"}  # taskset CPU lists: the same cores for every tool


def build_mobilenet_v2(work: Path) -> Path:
    """MobileNetV2 224x224 with random weights (keras.applications, weights=None: nothing downloaded).
    A stand-in for a real-size vision model: its latency is real, its accuracy meaningless (not measured)."""
    import numpy as np

    folder = work / "mobilenet_v2_224"
    if not (folder / "model.keras").exists():
        from edgeq.tfenv import quiet_tf

        quiet_tf()
        import keras

        folder.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(folder / "model.keras")
        rng = np.random.default_rng(0)
        np.savez(folder / "calib.npz", x=rng.uniform(-1, 1, size=(16, 224, 224, 3)).astype(np.float32))
    return folder


def convert_models(work: Path) -> list[Path]:
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    out = []
    sources = [(s, ROOT / "sample_models" / s) for s in SAMPLES] + [("mobilenet_v2_224", build_mobilenet_v2(work))]
    for name, src in sources:
        for mode in MODES:
            path = work / f"{name}_{mode}.tflite"
            if not path.exists():
                convert(src / "model.keras", ConvertOptions(mode=Mode(mode), calib=src / "calib.npz",
                                                            calib_samples=200), out=path)
            out.append(path)
    return out


def runs_for(model: Path) -> int:
    return 50 if "224" in model.name else RUNS  # ~20 ms per run: 50 runs give a stable median


def _pinned(threads: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", CPUS[threads], *argv]


def edgeq_p50(python: str, model: Path, threads: int) -> tuple[float, str]:
    """p50 from edgeq's host worker run by ``python`` (its ai-edge-litert), and the delegation it saw."""
    spec = {"model": str(model), "threads": threads, "runs": runs_for(model), "warmup": WARMUP}
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(_pinned(threads, [python, "-m", "edgeq.bench.host_worker"]), input=json.dumps(spec),
                         capture_output=True, text=True, check=True, env=env)
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("EDGEQ_BENCH_RESULT "))
    r = json.loads(line.split(" ", 1)[1])
    cov = r["delegation"][0] if r["delegation"] else None
    return r["inference"]["p50_ms"], f"{cov['nodes_delegated']}/{cov['nodes_total']}" if cov else "-"


def litert_benchmark_p50(cmd: str, model: Path, threads: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "r.json"
        subprocess.run(_pinned(threads, [cmd, "--model", str(model), "--num_runs", str(runs_for(model)),
                                         "--warmup_runs", str(WARMUP), "--num_threads", str(threads),
                                         "--result_json", str(res)]), capture_output=True, check=True)
        return json.loads(res.read_text())["latency"]["median_ms"]


def verdict(ratios_pct: list[float], p50_ms: float) -> str:
    """What the rounds allow one to say about the 5% claim (litert-benchmark prints ms with 2 decimals)."""
    if 0.005 / p50_ms * 100 > BAND_PCT / 2:  # its rounding alone can move the ratio by more than half the band
        return "below resolution"
    if all(abs(r) <= BAND_PCT for r in ratios_pct):
        return "within 5%"
    if all(r > BAND_PCT for r in ratios_pct) or all(r < -BAND_PCT for r in ratios_pct):
        return "outside 5%"
    return "spread too wide"


def _spread(xs: list[float]) -> str:
    return f"{min(xs):.3f}-{max(xs):.3f}"


def measure(model: Path, threads: int, ref: side_env.Runtime | None) -> dict:
    tools = {"edgeq": lambda: edgeq_p50(sys.executable, model, threads)[0]}
    if ref:
        tools["edgeq_ref"] = lambda: edgeq_p50(ref.python, model, threads)[0]
        tools["litert_benchmark"] = lambda: litert_benchmark_p50(ref.litert_benchmark, model, threads)
    rounds: dict[str, list[float]] = {k: [] for k in tools}
    names = list(tools)
    for i in range(ROUNDS):  # interleaved, order rotated: a busy spell hits every tool alike
        for name in names[i % len(names):] + names[:i % len(names)]:
            rounds[name].append(tools[name]())
    row = {"model": model.name, "threads": threads, "cpus": CPUS[threads],
           "delegated": edgeq_p50(sys.executable, model, threads)[1], "rounds": rounds,
           **{f"{k}_p50_ms": statistics.median(v) for k, v in rounds.items()}}
    if ref:
        ratios = [100 * (e / lb - 1) for e, lb in zip(rounds["edgeq_ref"], rounds["litert_benchmark"])]
        row.update(paired_diff_pct=ratios, paired_diff_median_pct=statistics.median(ratios),
                   verdict=verdict(ratios, row["litert_benchmark_p50_ms"]))
    return row


def edgeq_overhead(model: Path) -> dict:
    """Wall time of the whole `edgeq bench` command minus the timed runs."""
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "edgeq", "bench", str(model), "--runs", str(runs_for(model)), "--warmup",
                          str(WARMUP), "--json", "--no-progress"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t
    r = json.loads(out.stdout)[0]
    timed = r["inference"]["count"] * r["inference"]["mean_ms"] / 1e3
    warm = r["warmup"]["count"] * r["warmup"]["mean_ms"] / 1e3
    return {"model": model.name, "wall_s": round(wall, 3), "timed_runs_s": round(timed, 3),
            "overhead_s": round(wall - timed, 3), "of_which_warmup_s": round(warm, 3),
            "of_which_init_s": round(r["init_ms"] / 1e3, 3)}


def examples(models: list[Path]) -> dict[str, dict[str, str]]:
    """The `edgeq bench` and `edgeq compare` runs docs/bench.md shows, command and output as printed."""
    by = {m.stem: m for m in models}
    eval_data = ROOT / "sample_models" / "fashion_cnn" / "eval.npz"  # the same 2,000 test images for both samples
    cmds = {"bench": ["bench", by["fashion_cnn_fp32"], by["fashion_cnn_int8"], by["mobilenet_v2_224_int8"],
                      "--threads", "1,2", "--no-progress"],
            "compare": ["compare", by["fashion_cnn_fp32"], by["fashion_cnn_int8"], by["fashion_mobilenet_fp32"],
                        by["fashion_mobilenet_int8"], "--eval", eval_data, "--threads", "1", "--runs", "100",
                        "--no-progress"]}
    out = {}
    for name, args in cmds.items():
        done = subprocess.run([sys.executable, "-m", "edgeq", *map(str, args)], capture_output=True, text=True,
                              check=True, cwd=models[0].parent)
        shown = " ".join(Path(a).name if isinstance(a, Path) else a for a in args)
        out[name] = {"command": f"edgeq {shown}", "output": done.stdout}
    return out


def run(work: Path) -> dict:
    from importlib.metadata import version

    models = convert_models(work)
    ref, why_not = side_env.reference_runtime(work)
    rows = [measure(model, threads, ref) for model in models for threads in THREADS]
    overhead = [edgeq_overhead(m) for m in (models[0], models[-2])]
    counts = {v: sum(r.get("verdict") == v for r in rows) for v in
              ("within 5%", "outside 5%", "spread too wide", "below resolution")}
    return {"edgeq_ai_edge_litert": version("ai-edge-litert"), "reference": ref.describe() if ref else None,
            "reference_missing": why_not, "runs": RUNS, "warmup": WARMUP, "rounds": ROUNDS, "band_pct": BAND_PCT,
            "rows": rows, "verdicts": counts, "rows_total": len(rows), "overhead": overhead,
            "examples": examples(models),
            "markdown": markdown(rows, overhead, ref, why_not, version("ai-edge-litert"), counts)}


def markdown(rows: list[dict], overhead: list[dict], ref, why_not: str | None, pinned: str, counts: dict) -> str:
    ver = ref.version if ref else "?"
    lines = ["## Host latency: edgeq bench vs LiteRT's benchmark",
             f"\nedgeq's host worker on ai-edge-litert {pinned} (the project's pin) and on {ver} (the reference's "
             f"runtime); `litert-benchmark` from ai-edge-litert {ver} (CompiledModel API, ms with 2 decimals). "
             f"{RUNS} timed runs (50 for the 224x224 MobileNetV2) after {WARMUP} warmup; {ROUNDS} interleaved rounds "
             "per row, each tool a fresh process pinned with `taskset` to the same cores (1 thread: core 1; "
             "2 threads: cores 0-1); p50 = median of the rounds' p50, spread = min-max over rounds. Verdict: "
             "paired per round, edgeq on the reference runtime vs litert-benchmark; \"within 5%\" only when every "
             "round is inside the band.\n"]
    if not ref:
        lines.append(f"litert-benchmark column: **needs {why_not}**.\n")
    lines += [f"| model | threads | XNNPACK nodes | edgeq {pinned} p50 ms (spread) | edgeq {ver} p50 ms (spread) | "
              f"litert-benchmark {ver} p50 ms (spread) | paired diff median (range) | verdict |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e = f"{r['edgeq_p50_ms']:.3f} ({_spread(r['rounds']['edgeq'])})"
        if ref:
            er = f"{r['edgeq_ref_p50_ms']:.3f} ({_spread(r['rounds']['edgeq_ref'])})"
            lb = f"{r['litert_benchmark_p50_ms']:.3f} ({_spread(r['rounds']['litert_benchmark'])})"
            d = (f"{r['paired_diff_median_pct']:+.1f}% ({min(r['paired_diff_pct']):+.1f}.."
                 f"{max(r['paired_diff_pct']):+.1f})")
            lines.append(f"| {r['model']} | {r['threads']} | {r['delegated']} | {e} | {er} | {lb} | {d} | "
                         f"{r['verdict']} |")
        else:
            lines.append(f"| {r['model']} | {r['threads']} | {r['delegated']} | {e} | needs {why_not} | "
                         f"needs {why_not} | - | - |")
    if ref:
        lines.append("\nVerdicts: " + ", ".join(f"{v} {n} of {len(rows)}" for v, n in counts.items()) + ".")
    lines += ["\nOverhead of `edgeq bench` beyond the timed runs (whole CLI command, wall clock; the rest of the "
              "overhead is starting two Python processes, the CLI and the per-model worker, and their imports):\n",
              "| model | wall s | timed runs s | overhead s | of which warmup s | of which init s |",
              "|---|---|---|---|---|---|"]
    for o in overhead:
        lines.append(f"| {o['model']} | {o['wall_s']} | {o['timed_runs_s']} | {o['overhead_s']} | "
                     f"{o['of_which_warmup_s']} | {o['of_which_init_s']} |")
    return "\n".join(lines) + "\n"
