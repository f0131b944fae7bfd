"""``edgeq eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json, progress
from edgeq.modes import Layout


@app.command(name="eval", no_args_is_help=True)
def eval_(
    model: Path = typer.Argument(..., help="A .tflite model (float, int8 or uint8 I/O: handled)."),
    data: Path = typer.Option(..., "--data", "-d", help=".npz with inputs 'x' (or one per input) and labels 'y'."),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help=(
        "The float source model (.keras, .h5, SavedModel, .onnx): adds its top-1, the drop, and agreement.")),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N samples."),
    layout: Optional[Layout] = typer.Option(None, "--layout", help="Layout of 4-D data arrays."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
) -> None:
    """Accuracy of a .tflite model on labeled data; inputs are quantized and outputs dequantized with the
    model's own parameters."""
    from edgeq.evaluate import evaluate_file
    from edgeq.report import render_eval

    result = evaluate_file(model, data, reference, limit=limit, progress=progress(show_progress), layout=layout)
    emit_json(result.to_dict()) if as_json else emit(render_eval(result, model))
