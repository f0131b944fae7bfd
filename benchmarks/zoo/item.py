"""One zoo item (a model in one mode, or plain onnx2tf) in its own process: convert, run, measure.

    echo '{"model": "fer_emotion", "mode": "int8", "cache": "...", "work": "..."}' | python -m benchmarks.zoo.item

Prints one line ``ZOO_RESULT {json}``. An EdgeqError is a finding recorded as its one-line message; anything
else edgeq raises is recorded as "internal error: ..." (an edgeq bug); a crash of this process is recorded by
the parent (run.py) from the exit signal.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.zoo import data, manifest, metrics, runners  # noqa: E402
from benchmarks.zoo.manifest import Format, ZooModel  # noqa: E402
from edgeq.errors import first_line  # noqa: E402

MARK = "ZOO_RESULT "
ONNX2TF = "onnx2tf"
PER_TENSOR = "int8_per_tensor"  # classifiers only: the PTQ issue's per-tensor target
FAITHFUL_COSINE = 0.9999  # issue 13's bar for a faithful float conversion


def one_line(exc: BaseException) -> str:
    return first_line(exc)[:300]  # the zoo table has one cell per error


def measure(z: ZooModel, tflite: Path, cache: Path) -> tuple[dict, str | None]:
    """Family metric + output cosine/SQNR of ``tflite`` against the source framework on the eval split, and
    the per-sample hits (metrics.hits) where the family has them."""
    feeds = data.load(z, cache, "eval")
    ref = runners.source_outputs(z, z.path(cache), feeds)
    got = runners.tflite_outputs(z, tflite, feeds, ref)
    return metrics.measure(z.metric, ref, got, feeds), metrics.hits(z.metric, ref, got)


def _measured(res: dict, z: ZooModel, tflite: Path, cache: Path) -> None:
    res["metrics"], h = measure(z, tflite, cache)
    if h is not None:
        res["hits"] = h


def bench(tflite: Path, runs: int) -> dict:
    """Host p50 latency (LiteRT + XNNPACK, 1 thread) and XNNPACK coverage, through edgeq's host benchmark."""
    from edgeq.bench.host import HostBenchOptions, run_one

    if runs <= 0:
        return {}
    b = run_one(tflite, 1, HostBenchOptions(threads=(1,), runs=runs, warmup=3, timeout_s=600))
    if not b.ok:
        return {"bench_error": b.error}
    out: dict = {"p50_ms": b.inference.p50_ms}
    xnn = next((d for d in b.delegation if "xnn" in d.delegate.lower()), None)
    if xnn is not None:
        out["xnnpack"] = {"delegated": xnn.nodes_delegated, "total": xnn.nodes_total, "on_cpu": list(xnn.not_delegated)}
    return out


def run_edgeq(z: ZooModel, mode: str, cache: Path, work: Path) -> dict:
    from edgeq import ConvertOptions, Mode, convert
    from edgeq.errors import EdgeqError

    out = work / f"{z.name}_{mode}.tflite"
    calib = data.data_dir(z, cache) / "calib_edgeq.npz"
    per_tensor = mode == PER_TENSOR  # full INT8 with one weight scale per tensor (what some NPUs require)
    m = Mode.INT8 if per_tensor else Mode(mode)
    opts = ConvertOptions(mode=m, calib=calib if m.needs_calibration else None, per_channel=not per_tensor)
    shapes = dict(z.input_shapes) if z.format is Format.ONNX and z.input_shapes else None
    res: dict = {}
    try:
        report = convert(z.path(cache), opts, out=out, input_shapes=shapes)
    except EdgeqError as e:
        return {"status": "error", "error": one_line(e)}
    except Exception as e:  # noqa: BLE001 - anything but an EdgeqError is an edgeq bug: record it
        tb = traceback.extract_tb(e.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        return {"status": "error", "error": f"internal error: {type(e).__name__}: {one_line(e)}{where}",
                "internal": True}
    fid = report.extra.get("fidelity") or {}
    res.update(status="ok", tflite=str(out), size_bytes=report.size_bytes, float_size_bytes=report.float_size_bytes,
               fully_integer=bool(report.model.fully_integer),
               edgeq_fidelity=fid.get("cosine"), edgeq_fidelity_summary=fid.get("summary"))
    if report.warnings:  # what the conversion report told the user (e.g. an int8 concat that loses an input)
        res["warnings"] = list(report.warnings)
    try:
        _measured(res, z, out, cache)
    except Exception as e:  # noqa: BLE001 - a model that converts but cannot be run or compared
        res.update(status="error", error=f"converted, but running it failed: {type(e).__name__}: {one_line(e)}")
    return res


def run_onnx2tf(z: ZooModel, cache: Path, work: Path) -> dict:
    """Plain onnx2tf (its own defaults, TF path) to a float TFLite, for the side-by-side column."""
    if z.format is not Format.ONNX:
        return {"status": "n/a"}
    scratch = work / f"{z.name}_onnx2tf"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    copy = scratch / "model.onnx"  # onnx2tf's onnxsim step rewrites its input in place
    shutil.copyfile(z.path(cache), copy)
    cmd = [str(Path(sys.executable).with_name("onnx2tf")), "-i", str(copy), "-o", str(scratch / "out")]
    for name, shape in (z.input_shapes or {}).items():
        cmd += ["-ois", f"{name}:{','.join(map(str, shape))}"]
    # onnx2tf runs the `onnxsim` command by name: find it beside this Python even when the venv is not on PATH
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, cwd=scratch, env=env)
    found = sorted((scratch / "out").glob("*_float32.tflite"))
    if not found:
        text = (proc.stderr + proc.stdout).strip().splitlines()
        err = next((ln for ln in reversed(text) if "error" in ln.lower()), text[-1] if text else "no output")
        return {"status": "error", "error": f"onnx2tf wrote no float32 .tflite (exit {proc.returncode}): "
                                            f"{err.strip()[:240]}"}
    out = work / f"{z.name}_onnx2tf.tflite"
    shutil.copyfile(found[0], out)
    shutil.rmtree(scratch, ignore_errors=True)
    res = {"status": "ok", "tflite": str(out), "size_bytes": out.stat().st_size}
    try:
        _measured(res, z, out, cache)
        res["faithful"] = res["metrics"]["output_cosine"] >= FAITHFUL_COSINE
    except Exception as e:  # noqa: BLE001
        res.update(status="error", error=f"onnx2tf wrote a model, but running it failed: {one_line(e)}")
    return res


def main() -> int:
    spec = json.loads(sys.stdin.read())
    cache, work = Path(spec["cache"]), Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    z = manifest.load().model(spec["model"])
    t = time.perf_counter()
    res = run_onnx2tf(z, cache, work) if spec["mode"] == ONNX2TF else run_edgeq(z, spec["mode"], cache, work)
    if res.get("status") == "ok" and res.get("tflite"):
        res.update(bench(Path(res["tflite"]), int(spec.get("runs", 0))))
    if "error" in res:  # the cache path is this machine's; the table should not depend on it
        res["error"] = res["error"].replace(str(cache), "<cache>")
    res.update(model=z.name, mode=spec["mode"], seconds=round(time.perf_counter() - t, 1))
    print(MARK + json.dumps(res, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
