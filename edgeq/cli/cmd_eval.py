"""``edgeq eval``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json, progress, renamed
from edgeq.modes import Layout


@app.command(name="eval", no_args_is_help=True)
def eval_(
    model: Path = typer.Argument(..., help="A .tflite model (float, int8 or uint8 I/O: handled)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", "-e", help=(
        "Labelled data: .npz with inputs 'x' (or one per input name) and labels 'y', or a folder of images "
        "in class subfolders.")),
    reference: Optional[Path] = typer.Option(None, "--reference", "-r", help=(
        "The float source model (.keras, .h5, SavedModel, .onnx): adds its top-1, the drop, and agreement.")),
    eval_samples: Optional[int] = typer.Option(None, "--eval-samples", min=1,
                                               help="Use only the first N samples of --eval."),
    layout: Optional[Layout] = typer.Option(None, "--layout", help="Layout of 4-D data arrays."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    data_old: Optional[Path] = typer.Option(None, "--data", "-d", hidden=True),  # before 0.2: --eval
    limit_old: Optional[int] = typer.Option(None, "--limit", min=1, hidden=True),  # before 0.2: --eval-samples
) -> None:
    """Accuracy of a .tflite model on labelled data; inputs are quantized and outputs dequantized with the
    model's own parameters.

    Examples:

      edgeq eval model_int8.tflite --eval eval.npz

      edgeq eval model_int8.tflite --eval eval.npz --reference model.keras

      edgeq eval model_int8.tflite --eval images/ --eval-samples 500 --json
    """
    from edgeq.api import evaluate
    from edgeq.options import EvalOptions
    from edgeq.report import render_eval

    data = renamed(eval_data, data_old, "--eval", "--data", required=True)
    samples = renamed(eval_samples, limit_old, "--eval-samples", "--limit")
    result = evaluate(model, data, reference=reference, options=EvalOptions(eval_samples=samples, layout=layout),
                      progress=progress(show_progress))
    emit_json(result.to_dict()) if as_json else emit(render_eval(result, model))
