"""``edgeq bench``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import complete_target, emit, emit_json, progress, renamed
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
    target: List[str] = typer.Option(["host"], "--target", "-t", autocompletion=complete_target, help="Where to run: 'host', a profile (see "
                                     "'edgeq targets list'), adb[:SERIAL] or ssh://user@host[:port]. Repeat "
                                     "for several targets: they run in parallel, one table at the end."),
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
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Folder to write bench.json and bench.md."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON (a list, one per model and "
                                                       "thread count)."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    benchmark_binary: Optional[str] = typer.Option(None, "--benchmark-binary", help="Devices: LiteRT's "
                                                   "benchmark_model (a local file to copy, or its path on the "
                                                   "device). Android needs it; ssh boards without it use edgeq's "
                                                   "Python runner."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="Devices: xnnpack|none|gpu|nnapi|hexagon|"
                                                                     "external:LIB.so (path on the device)."),
    cores: str = typer.Option("all", "--cores", help="Devices: all|big|HEXMASK (taskset; big = fastest cores)."),
    op_profile: bool = typer.Option(False, "--op-profile", help="Devices: per-op table (benchmark_model)."),
    check_outputs: bool = typer.Option(False, "--check-outputs", help="Devices: same inputs on host and device, "
                                                                      "report the max difference."),
    ssh_identity: Optional[Path] = typer.Option(None, "--ssh-identity", help="ssh: a key file (agent and "
                                                                             "~/.ssh keys are used anyway)."),
    known_hosts: Optional[Path] = typer.Option(None, "--known-hosts", help="ssh: known_hosts file to check "
                                                                           "host keys against."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key", help="ssh: trust a board's key on "
                                                                                  "first contact (never a changed one)."),
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="Devices: seconds for one command."),
    out_old: Optional[Path] = typer.Option(None, "--out", "-o", hidden=True),  # before 0.2: --out-dir
) -> int:
    """Measure latency (init, first run, p50/p90/p99), peak memory and delegate coverage of .tflite models,
    each in a fresh process. A model only partly taken by the delegate is flagged: that is the usual
    silent slowdown. A model that fails is reported in one line; the others still run (exit code 2 then).

    Examples:

      edgeq bench model_fp32.tflite model_int8.tflite --threads 1,2

      edgeq bench model_int8.tflite --runs 200 --inputs eval.npz --json --out-dir bench/

      edgeq bench m_fp32.tflite m_int8.tflite --target host --target ssh://pi@raspberrypi.local
      --target adb --benchmark-binary ./benchmark_model --cores big --check-outputs
    """
    from edgeq.api import bench as run_bench
    from edgeq.bench.devices import device_notes
    from edgeq.bench.render import render_text
    from edgeq.options import BenchOptions

    out = renamed(out_dir, out_old, "--out-dir", "--out")
    options = BenchOptions(targets=tuple(target), threads=parse_threads(threads, 1) if threads else None, runs=runs,
                           warmup=warmup, xnnpack=xnnpack, delegate_lib=delegate_lib,
                           delegate_options=parse_options(delegate_option), inputs=inputs,
                           benchmark_binary=benchmark_binary, delegate=delegate, cores=cores, op_profile=op_profile,
                           check_outputs=check_outputs, timeout_s=timeout, ssh_identity=ssh_identity,
                           known_hosts=known_hosts, accept_new_host_key=accept_new_host_key)
    results = run_bench(models, options, out_dir=out, progress=progress(show_progress))
    if as_json:
        emit_json([r.to_dict() for r in results])
    elif any(r.ok for r in results) and len(target) > 1:
        from edgeq.bench.compare import build, render_markdown as comparison

        emit(comparison(build(models, results, {})))
    elif any(r.ok for r in results):
        emit(render_text(results))
    if not as_json:
        for line in device_notes(results):
            emit(line)
    failed = [r for r in results if not r.ok]
    for r in {r.error: r for r in failed}.values():  # one line per failing model, not per thread count
        print(f"edgeq: error: {r.error}", file=sys.stderr)
    return 2 if failed else 0

