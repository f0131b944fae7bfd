"""``edgeq compare``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json, progress
from edgeq.errors import DataError


def split_files(files: list[Path]) -> tuple[list[Path], list[Path], list[Path]]:
    """.tflite models, convert reports (.json objects) and bench results (.json lists)."""
    models, reports, results = [], [], []
    for f in files:
        if f.suffix == ".json":
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError) as exc:
                raise DataError(f"{f}: not readable JSON ({exc})") from None
            (results if isinstance(data, list) else reports).append(f)
        else:
            models.append(f)
    return models, reports, results


@app.command(no_args_is_help=True)
def compare(
    files: List[Path] = typer.Argument(..., help="Model variants (.tflite), and optionally their 'edgeq convert "
                                                 "--json' reports and 'edgeq bench --json/--out' results (.json)."),
    target: List[str] = typer.Option([], "--target", "-t", help="Targets to benchmark on now (repeatable; as in "
                                     "'edgeq bench --target'). Default: host, unless bench results are given."),
    reports: List[Path] = typer.Option([], "--reports", "-r", help="A convert report with accuracy (repeatable)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", "-e", help="Measure top-1 of every variant on this "
                                                                        "labeled .npz instead of using reports."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts to try (the fastest is shown)."),
    runs: int = typer.Option(50, "--runs", min=1, help="Timed runs per model."),
    warmup: int = typer.Option(5, "--warmup", min=1),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for compare.md, compare.json and "
                                                                 "compare.png (Pareto plot)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
) -> int:
    """One table of variants x targets with size, accuracy and p50 latency, the Pareto front marked,
    and a PNG plot of latency vs accuracy (marker size = model size).

    Examples:

      edgeq compare m_fp32.tflite m_int8.tflite m_fp32.json m_int8.json --out cmp/

      edgeq compare m_fp32.tflite m_int8.tflite --eval eval.npz --threads 1,2

      edgeq compare m_fp32.tflite m_int8.tflite m_fp32.json m_int8.json --target host --target rpi5

      edgeq compare m_fp32.tflite m_int8.tflite --reports m_int8.json pi_results/bench.json
    """
    from edgeq.bench import compare as cmp
    from edgeq.bench.devices import DeviceBenchOptions
    from edgeq.bench.host import HostBenchOptions
    from edgeq.bench.multi import bench_targets
    from edgeq.bench.result import BenchResult
    from edgeq.cli.cmd_bench import _check_out, parse_threads

    models, found_reports, result_files = split_files(list(files))
    if not models:
        raise DataError("no .tflite models given; pass the variants to compare, e.g. m_fp32.tflite m_int8.tflite")
    if out is not None:
        _check_out(out, inputs=[*files, *reports, eval_data],
                   names=("compare.md", "compare.json", "compare.png"))
    results: list[BenchResult] = []
    for f in result_files:
        try:
            results += [BenchResult.from_dict(d) for d in json.loads(f.read_text())]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{f}: not an 'edgeq bench --json' result list ({exc})") from None
    specs = list(target) or ([] if result_files else ["host"])
    if specs:  # the same runners as `edgeq bench --target ...` (host process per model, devices over adb/ssh)
        results += bench_targets(specs, models, threads=parse_threads(threads, 1) if threads else None,
                                 host=HostBenchOptions(runs=runs, warmup=warmup),
                                 device=DeviceBenchOptions(runs=runs, warmup=warmup), progress=progress(show_progress))
    accuracies, modes = cmp.read_reports(list(reports) + found_reports)
    if eval_data is not None:
        accuracies.update(_measure(models, eval_data, show_progress))
    comparison = cmp.build(models, results, accuracies, modes)
    md = cmp.render_markdown(comparison)
    if out is not None:
        from edgeq.fileio import atomic_write_text, make_output_folder

        make_output_folder(out)
        atomic_write_text(out / "compare.md", md)
        atomic_write_text(out / "compare.json", json.dumps(comparison.to_dict(), indent=2) + "\n")
        if cmp.plot_pareto(comparison, out / "compare.png") is None:
            print("edgeq: note: no variant has both accuracy and latency; no plot written", file=sys.stderr)
    emit_json(comparison.to_dict()) if as_json else emit(md.rstrip())
    failed = {r.error for r in results if not r.ok and any(Path(r.model).name == m.name for m in models)}
    for e in sorted(failed):
        print(f"edgeq: error: {e}", file=sys.stderr)
    return 2 if failed else 0


def _measure(models: list[Path], data: Path, show_progress) -> dict:
    from edgeq.bench.compare import Accuracy
    from edgeq.evaluate import evaluate_file

    acc = {}
    for m in models:
        if not m.is_file():
            continue  # the bench step already reported it
        r = evaluate_file(m, data, progress=progress(show_progress))
        if r.top1 is None:
            raise DataError(f"--eval {data}: has no labels 'y'; top-1 needs labels (or pass convert reports)")
        acc[m.name] = Accuracy(100.0 * r.top1, "top1", str(data))
    return acc
