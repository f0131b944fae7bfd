"""`make zoo`: every zoo model x fp32, fp16, dynamic, int8, int16x8 through edgeq's library API, plus plain
onnx2tf for every ONNX model; one table (benchmarks/results/zoo.md + zoo.json); non-zero exit on a regression
against reference.toml.

Items run in parallel, each in its own process (a segfault is a recorded result, not the end of the run); cost
is one item per model x mode. Each item also benchmarks what it wrote, so latencies are taken while another
item converts on the other core: compare them within this table, not with quiet-machine numbers. Results are
written after every item (marked partial until the last one), and items run mode-major (fp32 and int8 of
every model first) so a run cut short still answers the main questions.

    python -m benchmarks.zoo.run [--fast] [--models A B] [--modes fp32 int8] [--jobs N] [--update-reference]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from importlib import metadata
from pathlib import Path

from benchmarks import provenance
from benchmarks.zoo import data, manifest, reference
from benchmarks.zoo.item import MARK, ONNX2TF, PER_TENSOR
from benchmarks.zoo.metrics import PRIMARY
from benchmarks.zoo.report import render_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]
ITEM_TIMEOUT_S = 2400
ORDER = ["fp32", "int8", ONNX2TF, "fp16", "dynamic", "int16x8", PER_TENSOR]  # most telling first, for runs cut short
PACKAGES = ["tensorflow", "keras", "ai-edge-litert", "onnx2tf", "onnx", "onnxruntime", "numpy"]


def applies(z: manifest.ZooModel, mode: str) -> bool:
    """onnx2tf runs on ONNX models only; per-tensor INT8 on the classifiers only (where agreement is measured)."""
    if mode == ONNX2TF:
        return z.format is manifest.Format.ONNX
    return mode != PER_TENSOR or z.family == "classifier"


def run_item(model: str, mode: str, cache: Path, work: Path, runs: int = 0) -> dict:
    """One item in a fresh process; a crash or timeout becomes a result with the reason."""
    spec = json.dumps({"model": model, "mode": mode, "cache": str(cache), "work": str(work), "runs": runs})
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="-1")
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.zoo.item"], input=spec, capture_output=True,
                              text=True, timeout=ITEM_TIMEOUT_S, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": model, "mode": mode, "status": "error", "error": f"timeout after {ITEM_TIMEOUT_S} s",
                "seconds": ITEM_TIMEOUT_S}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    rc = proc.returncode
    how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
    tail = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()][-1:] or ["no output"]
    return {"model": model, "mode": mode, "status": "error", "crash": True,
            "error": f"process crashed ({how}): {tail[0].strip()[:200]}", "seconds": round(time.perf_counter() - t, 1)}


def environment() -> dict:
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "edgeq", "benchmarks/zoo"],
                                    capture_output=True, text=True, cwd=ROOT).stdout.strip())
    except OSError:
        commit, dirty = None, None
    return {"git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores", "packages": versions}


def _earlier(path: Path, rerun: set) -> tuple[list[dict], list[dict]]:
    """The rows of an existing results file that this run does not redo (each with the commit it ran on),
    and the runs they came from."""
    doc = json.loads(path.read_text())
    commit = doc["environment"]["git_commit"]
    kept = [{**r, "commit": r.get("commit", commit)} for r in doc["results"] if (r["model"], r["mode"]) not in rerun]
    runs = doc.get("runs") or [{"commit": commit, "started": doc.get("started"), "modes": doc.get("modes"),
                                "models": "all"}]
    used = {r["commit"] for r in kept}
    return kept, [x for x in runs if x["commit"] in used]


def write(out: Path, env: dict, started: float, a, m, models, results: list[dict], total: int,
          meta: dict | None = None, runs: list[dict] | None = None):
    """zoo.json + zoo.md for the results so far (``partial`` until all ``total`` items are in); ``meta`` is
    the provenance block (commit, versions, source hashes) every results file carries, stamped before the run."""
    regressions, improvements = reference.check(results, reference.load())
    merged = {r["model"] for r in results}  # rows kept from --merge-from files may be of models not run now
    left = total - len(results)
    doc = {"environment": env, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
           "wall_s": round(time.time() - started, 1), "jobs": a.jobs, "partial": left > 0,
           "partial_note": f"{len(results)} of {total} items done, {left} not run yet", "bench_runs": a.runs,
           "subset": "fast" if a.fast else ("models" if a.models else "all"), "modes": a.modes,
           "models": [{"name": z.name, "family": z.family, "wheel": m.wheels[z.wheel].pin, "file": z.file,
                       "license": z.license, "redistributable": z.redistributable} for z in m.models
                      if z in models or z.name in merged],
           "results": results, "regressions": regressions, "improvements": improvements, "runs": runs or [],
           "combined": not any(x.get("modes") for x in (runs or [])[-1:])}
    if meta is not None:
        doc["_meta"] = {**meta, "seconds": doc["wall_s"], "date": time.strftime("%Y-%m-%d %H:%M")}
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((out.with_suffix(".json"), json.dumps(doc, indent=1, default=float) + "\n"),
                       (out.with_suffix(".md"), render_markdown(doc))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return regressions, improvements


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="only the fast subset")
    ap.add_argument("--models", nargs="*")
    ap.add_argument("--modes", nargs="*", default=MODES + [ONNX2TF, PER_TENSOR])
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=30, help="benchmark runs per model (0: no benchmark)")
    ap.add_argument("--out", type=Path, default=RESULTS / "zoo")
    ap.add_argument("--work", type=Path, default=None, help="where .tflite files go (default: <cache>/work)")
    ap.add_argument("--update-reference", action="store_true", help="record this run as reference.toml")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other items of the existing --out results (each row records its commit)")
    ap.add_argument("--merge-from", type=Path, nargs="*", default=[],
                    help="also keep the rows of these results files that this run does not redo")
    a = ap.parse_args(argv)
    cache = manifest.cache_dir()
    m = manifest.load()
    models = [z for z in m.models if (not a.models or z.name in a.models) and (not a.fast or z.fast)]
    missing = [z.name for z in models if not z.path(cache).exists()]
    if missing:
        print(f"zoo: not in the cache {cache}: {', '.join(missing)}; run make zoo-fetch", file=sys.stderr)
        return 2
    work = a.work or cache / "work"
    modes = sorted(a.modes, key=lambda x: ORDER.index(x) if x in ORDER else len(ORDER))
    items = [(z, mode) for mode in modes for z in models if applies(z, mode)]
    started = time.time()
    env = environment()  # before the run: the commit the items ran on, not whatever is checked out at the end
    meta = provenance.stamp("zoo/run")
    print(f"zoo: {len(items)} items, {a.jobs} at a time", file=sys.stderr, flush=True)
    results: list[dict] = []
    runs = [{"commit": env["git_commit"], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
             "modes": sorted({mode for _, mode in items}), "models": "all" if not a.models else a.models}]
    sources = ([a.out.with_suffix(".json")] if a.merge and a.out.with_suffix(".json").exists() else []) + a.merge_from
    for src in sources:  # a row in several files: the first one that has it wins
        kept, earlier = _earlier(src, {(z.name, mode) for z, mode in items} | {(r["model"], r["mode"]) for r in results})
        results, runs = results + kept, earlier + runs
    everything = [(z, mode) for mode in ORDER for z in m.models if applies(z, mode)]
    order = {(z.name, mode): i for i, (z, mode) in enumerate(everything)}
    total = len(items) + len(results)
    if sources:  # a merged table is partial unless every model x mode is in it
        total = max(total, len({(z.name, mode) for z, mode in everything}))
    for z in {z.name: z for z, _ in items}.values():  # once per model, before parallel items read it
        data.prepare(z, cache)
    with ThreadPoolExecutor(a.jobs) as pool:
        futs = {pool.submit(run_item, z.name, mode, cache, work, a.runs): (z, mode) for z, mode in items}
        for done, f in enumerate(as_completed(futs), 1):
            z, mode = futs[f]
            r = f.result()
            r["primary"] = PRIMARY[z.metric]
            r["family"] = z.family
            r["commit"] = env["git_commit"]
            results.append(r)
            v = (r.get("metrics") or {}).get(r["primary"])
            print(f"  [{done}/{len(items)}] {z.name:20s} {mode:8s} {r['status']:5s} "
                  f"{r['primary']}={v} {r.get('error', '')[:120]} ({r.get('seconds')} s)", file=sys.stderr, flush=True)
            results.sort(key=lambda r: order[(r["model"], r["mode"])])
            write(a.out, env, started, a, m, models, results, total, meta, runs)
    regressions, improvements = write(a.out, env, started, a, m, models, results, total, meta, runs)
    if a.update_reference:
        reference.REFERENCE.write_text(reference.render(results))
    for line in improvements:
        print(f"zoo: improved: {line}", file=sys.stderr)
    for line in regressions:
        print(f"zoo: REGRESSION: {line}", file=sys.stderr)
    print(f"zoo: wrote {a.out.with_suffix('.md')} and .json; {len(regressions)} regression(s)", file=sys.stderr)
    return 1 if regressions and not a.update_reference else 0


if __name__ == "__main__":
    sys.exit(main())
