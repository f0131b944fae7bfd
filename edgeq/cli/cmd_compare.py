"""``edgeq compare``."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import complete_target, emit, emit_json, progress, renamed, warn
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
                                                 "--json' reports and 'edgeq bench --json/--out-dir' results "
                                                 "(.json)."),
    target: List[str] = typer.Option([], "--target", "-t", autocompletion=complete_target, help="Targets to benchmark on now (repeatable; as in "
                                     "'edgeq bench --target'). Default: host, unless bench results are given."),
    reports: List[Path] = typer.Option([], "--reports", help="A convert report with accuracy (repeatable)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", "-e", help="Measure top-1 of every variant on this "
                                                                        "labelled .npz instead of using reports."),
    threads: Optional[str] = typer.Option(None, "--threads", help="Thread counts to try (the fastest is shown)."),
    runs: int = typer.Option(50, "--runs", min=1, help="Timed runs per model."),
    warmup: int = typer.Option(5, "--warmup", min=1),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Folder for compare.md, compare.json and "
                                                                   "compare.png (Pareto plot)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    reports_old: List[Path] = typer.Option([], "-r", hidden=True),  # before 0.2; -r is --reference elsewhere
    out_old: Optional[Path] = typer.Option(None, "--out", "-o", hidden=True),  # before 0.2: --out-dir
) -> int:
    """One table of variants x targets with size, accuracy and p50 latency, the Pareto front marked,
    and a PNG plot of latency vs accuracy (marker size = model size).

    Examples:

      edgeq compare m_fp32.tflite m_int8.tflite m_fp32.json m_int8.json --out-dir cmp/

      edgeq compare m_fp32.tflite m_int8.tflite --eval eval.npz --threads 1,2

      edgeq compare m_fp32.tflite m_int8.tflite m_fp32.json m_int8.json --target host --target rpi5

      edgeq compare m_fp32.tflite m_int8.tflite --reports m_int8.json pi_results/bench.json
    """
    from edgeq.api import compare as run_compare
    from edgeq.bench import compare as cmp
    from edgeq.cli.cmd_bench import parse_threads
    from edgeq.options import CompareOptions

    models, found_reports, result_files = split_files(list(files))
    if not models:
        raise DataError("no .tflite models given; pass the variants to compare, e.g. m_fp32.tflite m_int8.tflite")
    reports = list(reports) + (renamed(None, list(reports_old), "--reports", "-r") if reports_old else [])
    options = CompareOptions(targets=tuple(target), reports=tuple(reports + found_reports),
                             results=tuple(result_files), eval_data=eval_data,
                             threads=parse_threads(threads, 1) if threads else None, runs=runs, warmup=warmup)
    comparison = run_compare(models, options, out_dir=renamed(out_dir, out_old, "--out-dir", "--out"),
                             progress=progress(show_progress))
    for note in comparison.notes:
        warn(f"edgeq: note: {note}")
    emit_json(comparison.to_dict()) if as_json else emit(cmp.render_markdown(comparison).rstrip())
    failed = {r.error for v in comparison.variants for r in v.latency.values() if not r.ok}
    for e in sorted(failed):
        print(f"edgeq: error: {e}", file=sys.stderr)
    return 2 if failed else 0
