"""edgeq bench on the host against LiteRT's own `litert-benchmark`, side by side, and edgeq bench's overhead.

Models: the sample models' fp32 and int8 conversions. For each model and thread count, ROUNDS interleaved
rounds of (edgeq host runner, litert-benchmark, a minimal Interpreter.invoke() timing loop), each in a fresh
process with the same runs/warmup; the p50 of each tool is the median over rounds (the machine is shared).

`litert-benchmark` is the console script of ai-edge-litert >= 2.3 (CompiledModel API). The project pins
ai-edge-litert 2.1.2, whose wheel has neither the command nor `tools/benchmark_litert_model.py`; the command
is looked up beside this Python, then at $EDGEQ_LITERT_BENCHMARK (e.g. a separate venv with 2.3.0). Without
it only the timing-loop reference is measured and the results say so.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ("fashion_cnn", "fashion_mobilenet")
MODES = ("fp32", "int8")
THREADS = (1, 2)
RUNS, WARMUP, ROUNDS = 200, 10, 3

# A fresh-process reference on the pinned runtime: nothing but Interpreter + invoke() timing.
_LOOP = r"""
import sys, time, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2])); it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
for _ in range(int(sys.argv[4])): it.invoke()
ts = []
for _ in range(int(sys.argv[3])):
    t = time.perf_counter(); it.invoke(); ts.append((time.perf_counter() - t) * 1e3)
print(float(np.median(ts)))
"""


def find_litert_benchmark() -> tuple[str | None, str]:
    """The command and the ai-edge-litert version it runs on."""
    here = Path(sys.executable).parent / "litert-benchmark"
    cand = str(here) if here.exists() else os.environ.get("EDGEQ_LITERT_BENCHMARK") or shutil.which("litert-benchmark")
    if not cand or not Path(cand).exists():
        return None, ""
    try:  # a pip console script: its shebang names the Python (and so the ai-edge-litert) it runs on
        py = Path(cand).read_text().splitlines()[0].removeprefix("#!").strip()
        ver = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('ai-edge-litert'))"],
                             capture_output=True, text=True).stdout.strip()
    except (OSError, UnicodeDecodeError, IndexError):
        ver = "unknown"
    return cand, ver


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


def litert_benchmark_p50(cmd: str, model: Path, threads: int) -> tuple[float, bool]:
    with tempfile.TemporaryDirectory() as d:
        res = Path(d) / "r.json"
        subprocess.run([cmd, "--model", str(model), "--num_runs", str(runs_for(model)), "--warmup_runs", str(WARMUP),
                        "--num_threads", str(threads), "--result_json", str(res)], capture_output=True, check=True)
        data = json.loads(res.read_text())
    return data["latency"]["median_ms"], data["fully_accelerated"]


def loop_p50(model: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", _LOOP, str(model), str(threads), str(runs_for(model)), str(WARMUP)],
                         capture_output=True, text=True, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return float(out.stdout.strip().splitlines()[-1])


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


def run(work: Path) -> dict:
    from edgeq.bench.host import HostBenchOptions, bench_host

    models = convert_models(work)
    cmd, lb_version = find_litert_benchmark()
    rows = []
    for model in models:
        for threads in THREADS:
            e, lb, lp, full = [], [], [], None
            for _ in range(ROUNDS):  # interleaved: load changes hit every tool alike
                [r] = bench_host([model], HostBenchOptions(threads=(threads,), runs=runs_for(model), warmup=WARMUP))
                e.append(r.inference.p50_ms)
                if cmd:
                    p, full = litert_benchmark_p50(cmd, model, threads)
                    lb.append(p)
                lp.append(loop_p50(model, threads))
            cov = r.delegation[0] if r.delegation else None
            row = {"model": model.name, "threads": threads, "edgeq_p50_ms": statistics.median(e),
                   "loop_p50_ms": statistics.median(lp), "edgeq_rounds": e, "loop_rounds": lp,
                   "delegated": f"{cov.nodes_delegated}/{cov.nodes_total}" if cov else "-"}
            if cmd:
                row.update(litert_benchmark_p50_ms=statistics.median(lb), litert_benchmark_rounds=lb,
                           litert_benchmark_fully_accelerated=full)
                row["diff_vs_litert_benchmark_pct"] = 100 * (row["edgeq_p50_ms"] / row["litert_benchmark_p50_ms"] - 1)
            row["diff_vs_loop_pct"] = 100 * (row["edgeq_p50_ms"] / row["loop_p50_ms"] - 1)
            rows.append(row)
    overhead = [edgeq_overhead(m) for m in (models[0], models[-2])]
    return {"litert_benchmark": cmd or None, "litert_benchmark_ai_edge_litert": lb_version or None,
            "runs": RUNS, "warmup": WARMUP, "rounds": ROUNDS, "rows": rows, "overhead": overhead,
            "markdown": markdown(rows, overhead, cmd, lb_version)}


def markdown(rows: list[dict], overhead: list[dict], cmd: str | None, lb_version: str) -> str:
    from importlib.metadata import version

    ref = (f"`litert-benchmark` (ai-edge-litert {lb_version}, CompiledModel API, 2-decimal ms output)" if cmd else
           "`litert-benchmark`: **not available** (the pinned ai-edge-litert has no such command)")
    lines = ["## Host latency: edgeq bench vs LiteRT's benchmark",
             f"\nedgeq: ai-edge-litert {version('ai-edge-litert')} Interpreter + XNNPACK, one fresh process per "
             f"run. Reference: {ref}; and a minimal `Interpreter.invoke()` timing loop on the pinned runtime. "
             f"{RUNS} timed runs (50 for the 224x224 MobileNetV2, random weights: a size stand-in) after {WARMUP} "
             f"warmup, p50 = median of {ROUNDS} interleaved rounds. The sample models run in ~0.1 ms, where "
             "litert-benchmark's 0.01 ms rounding alone is 5-12%: judge the 5% target on MobileNetV2.\n",
             "| model | threads | XNNPACK nodes | edgeq p50 ms | litert-benchmark p50 ms | diff | timing loop p50 ms "
             "| diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lb = (f"{r['litert_benchmark_p50_ms']:.3f} | {r['diff_vs_litert_benchmark_pct']:+.1f}%"
              if "litert_benchmark_p50_ms" in r else "- | -")
        lines.append(f"| {r['model']} | {r['threads']} | {r['delegated']} | {r['edgeq_p50_ms']:.3f} | {lb} | "
                     f"{r['loop_p50_ms']:.3f} | {r['diff_vs_loop_pct']:+.1f}% |")
    lines += ["\nOverhead of `edgeq bench` beyond the timed runs (whole CLI command, wall clock; the rest of the "
              "overhead is starting two Python processes, the CLI and the per-model worker, and their imports):\n",
              "| model | wall s | timed runs s | overhead s | of which warmup s | of which init s |",
              "|---|---|---|---|---|---|"]
    for o in overhead:
        lines.append(f"| {o['model']} | {o['wall_s']} | {o['timed_runs_s']} | {o['overhead_s']} | "
                     f"{o['of_which_warmup_s']} | {o['of_which_init_s']} |")
    return "\n".join(lines) + "\n"
