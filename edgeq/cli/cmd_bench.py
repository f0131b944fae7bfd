"""``edgeq bench``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json, progress
from edgeq.errors import DataError


def parse_threads(text: str | None, default: int) -> tuple[int, ...]:
    if text is None:
        return (default,)
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise DataError(f"--threads '{text}': give thread counts >= 1, comma-separated, e.g. 1,2,4")
    return values


def parse_options(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError(f"--delegate-option '{item}': give KEY=VALUE, e.g. backend_type=htp")
        out[key] = value
    return out


@app.command(no_args_is_help=True)
def bench(
    models: List[Path] = typer.Argument(..., help="One or more .tflite models."),
    target: str = typer.Option("host", "--target", "-t", help="Target profile (see 'edgeq targets list')."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts, e.g. 1,2,4 "
                                                                  "(default: the target's)."),
    runs: int = typer.Option(50, "--runs", min=1, help="Timed runs per model and thread count."),
    warmup: int = typer.Option(5, "--warmup", min=1, help="Untimed warmup runs (the first is reported as "
                                                          "'first inference')."),
    xnnpack: bool = typer.Option(True, "--xnnpack/--no-xnnpack", help="XNNPACK delegate on the CPU (default on)."),
    delegate_lib: Optional[Path] = typer.Option(None, "--delegate-lib", help="An external delegate .so to load "
                                                                             "instead of XNNPACK."),
    delegate_option: List[str] = typer.Option([], "--delegate-option", help="KEY=VALUE for --delegate-lib "
                                                                            "(repeatable)."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help=".npz whose first sample is fed (arrays by "
                                                                 "input name, or 'x'). Default: random data in "
                                                                 "each input's range."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write bench.json and bench.md."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON (a list, one per model and "
                                                       "thread count)."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
) -> int:
    """Measure latency (init, first run, p50/p90/p99), peak memory and delegate coverage of .tflite models,
    each in a fresh process. A model only partly taken by the delegate is flagged: that is the usual
    silent slowdown. A model that fails is reported in one line; the others still run (exit code 2 then).

    Examples:

      edgeq bench model_fp32.tflite model_int8.tflite --threads 1,2

      edgeq bench model_int8.tflite --runs 200 --inputs eval.npz --json --out bench/
    """
    from edgeq.bench.host import HostBenchOptions, bench_host
    from edgeq.bench.render import render_markdown, render_text
    from edgeq.targets import Transport, load_target

    profile = load_target(target)
    opts = HostBenchOptions(threads=parse_threads(threads, profile.threads), runs=runs, warmup=warmup,
                            xnnpack=xnnpack, delegate_lib=str(delegate_lib) if delegate_lib else None,
                            delegate_options=parse_options(delegate_option), inputs=inputs, target=profile.name)
    if inputs is not None and not inputs.is_file():
        raise DataError(f"--inputs {inputs}: no such file; give an .npz")
    if out is not None:
        _check_out(out)
    if profile.transport is Transport.LOCAL:
        results = bench_host(models, opts, progress(show_progress))
    else:
        results = _bench_device(models, profile, opts, show_progress)
    if out is not None:
        from edgeq.fileio import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "bench.json", json.dumps([r.to_dict() for r in results], indent=2) + "\n")
        atomic_write_text(out / "bench.md", render_markdown(results))
    if as_json:
        emit_json([r.to_dict() for r in results])
    elif any(r.ok for r in results):
        emit(render_text(results))
    failed = [r for r in results if not r.ok]
    for r in {r.error: r for r in failed}.values():  # one line per failing model, not per thread count
        print(f"edgeq: error: {r.error}", file=sys.stderr)
    return 2 if failed else 0


def _check_out(out: Path) -> None:
    """Fail before minutes of benchmarking when the results folder cannot be written."""
    from edgeq.errors import OutputError
    from edgeq.fileio import check_writable

    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out}: is a file; give a folder for bench.json and bench.md")
    check_writable(out / "bench.json" if out.is_dir() else out)


def _bench_device(models, profile, opts, show_progress):
    """Device targets (adb/ssh) run LiteRT's benchmark_model there; that runner lives in edgeq.bench.device."""
    from edgeq.bench.errors import TargetError

    try:
        from edgeq.bench.device import bench_device  # type: ignore[attr-defined]
    except ImportError:
        raise TargetError(f"target '{profile.name}' is reached over {profile.transport.value}; device "
                          "benchmarks are not available in this build (use --target host)") from None
    return bench_device(models, profile, threads=opts.threads, runs=opts.runs, warmup=opts.warmup,
                        progress=progress(show_progress))
