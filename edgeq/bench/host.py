"""Benchmark .tflite models on this machine with ai-edge-litert, each model in a process of its own.

``bench_host`` never raises for one bad model: each failure is a ``BenchResult`` with ``error`` set (one
line), so a batch of models always yields every result it could get.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import signal
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from edgeq.bench.host_worker import RESULT_MARK, WorkerSpec
from edgeq.bench.result import BenchResult
from edgeq.errors import ModelLoadError
from edgeq.progress import Progress, Silent
from edgeq.tflite.verify import verify_tflite

TAIL_LINES = 8


@dataclass(frozen=True)
class HostBenchOptions:
    """How each model is run on the host."""

    threads: tuple[int, ...] = (1,)
    runs: int = 50
    warmup: int = 5
    xnnpack: bool = True
    delegate_lib: str | None = None
    delegate_options: dict[str, str] = field(default_factory=dict)
    inputs: Path | None = None
    timeout_s: float = 600.0
    target: str = "host"


def bench_host(models: list[Path], options: HostBenchOptions = HostBenchOptions(),
               progress: Progress | None = None) -> list[BenchResult]:
    """One result per (model, thread count), in that order."""
    progress = progress or Silent()
    jobs = [(Path(m), t) for m in models for t in options.threads]
    results: list[BenchResult] = []
    with progress.task("benchmarking on host", total=len(jobs)) as step:
        failed: dict[Path, BenchResult] = {}
        for model, threads in jobs:
            if model in failed:  # a model that failed once fails at every thread count: don't rerun it
                results.append(replace(failed[model], threads=threads))
            else:
                results.append(run_one(model, threads, options))
                if not results[-1].ok:
                    failed[model] = results[-1]
            step.advance()
    return results


def run_one(model: Path, threads: int, options: HostBenchOptions) -> BenchResult:
    """Run the worker for one model and thread count; a crash becomes a result with ``error`` set."""
    spec = WorkerSpec(model=str(model), threads=threads, runs=options.runs, warmup=options.warmup,
                      xnnpack=options.xnnpack, delegate_lib=options.delegate_lib,
                      delegate_options=dict(options.delegate_options) or None,
                      inputs=str(options.inputs) if options.inputs else None, target=options.target)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    base = BenchResult(model=str(model), target=options.target, threads=threads,
                       delegate=options.delegate_lib or ("xnnpack" if options.xnnpack else "none"))
    try:  # here, not in the worker: its peak memory is what the model costs, and a clear line beats a crash
        verify_tflite(Path(model))
    except ModelLoadError as exc:
        base.error = str(exc)
        return base
    try:
        proc = subprocess.run([sys.executable, "-m", "edgeq.bench.host_worker"], input=json.dumps(asdict(spec)),
                              capture_output=True, text=True, timeout=options.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        base.error = f"{model}: no result within {options.timeout_s:.0f} s; use fewer --runs"
        return base
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result = BenchResult.from_dict(json.loads(line[len(RESULT_MARK):]))
            result.output_tail = tail(proc.stderr)
            return result
    base.output_tail = tail(proc.stderr + proc.stdout)
    how = _signal_name(-proc.returncode) if proc.returncode < 0 else f"exit code {proc.returncode}"
    last = base.output_tail.splitlines()[-1][:160] if base.output_tail else "no output"
    base.error = (f"{model}: LiteRT crashed loading or running it ({how}; last output: {last}); "
                  "the file may be truncated or corrupt, convert it again")
    return base


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last non-empty lines of a tool's output."""
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])
