"""``edgeq inspect``."""
from __future__ import annotations

from pathlib import Path

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json


@app.command(no_args_is_help=True)
def inspect(
    model: Path = typer.Argument(..., help="A .tflite model."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Show a .tflite model's I/O (dtype, shape, scale, zero point), ops, tensor dtypes, per-channel
    weights, where its bytes go, and which nodes XNNPACK (LiteRT's CPU delegate) takes and why not the rest.

    Examples:

      edgeq inspect model_int8.tflite

      edgeq inspect model_int8.tflite --json | jq .xnnpack
    """
    from edgeq.api import inspect as run_inspect
    from edgeq.report import render_info

    info = run_inspect(model, xnnpack=True)
    emit_json(info.to_dict()) if as_json else emit(render_info(info))
