"""``edgeq analyze``: which layers does INT8 hurt, measured layer by layer."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json, progress
from edgeq.modes import Fallback, Layout, Metric, PtqChoice


def render_sensitivity(sens, top: int | None = None) -> str:
    """The table people read: most harmful layer first."""
    rows = sens.layers[:top] if top else sens.layers
    kept = "int16" if sens.fallback is Fallback.INT16 else "float"
    head = (f"full INT8 loses {sens.loss_int8:+.2f} {sens.metric.value} pt against the float model "
            f"on {sens.samples} samples ({sens.seconds:.1f} s)\n"
            "error share: part of the full-INT8 output error removed by keeping only that layer (and its output)"
            + (" float" if kept == "float" else " at 16-bit activations (int8 weights, all-integer)")
            + "\nrmse/scale: the layer's own error in quantization steps (QuantizationDebugger metric; "
            "~0.29 is ideal rounding, > 0.7 suspicious)\n")
    width = max([len(s.layer) for s in rows] + [5])
    lines = [f"{'#':>3}  {'layer':<{width}}  {'op':<18} {'MACs':>10}  {'error share':>11}  {'drop if ' + kept:>13}  "
             f"{'rmse/scale':>10}  {kept} with (its readers)"]
    short = {s.node: s.layer for s in sens.layers}
    for i, s in enumerate(rows, 1):
        rmse = f"{s.rmse_scale:.3f}" if s.rmse_scale is not None else "-"
        readers = ", ".join(short.get(n, "?") for n in s.group if n != s.node) or "-"
        lines.append(f"{i:>3}  {s.layer:<{width}}  {s.op:<18} {s.macs:>10,}  {100 * s.error_share:>10.1f}%  "
                     f"{s.loss_alone:>+13.2f}  {rmse:>10}  {readers}")
    notes = [f"note: {n}" for n in sens.notes]
    return "\n".join([head] + lines + notes)


@app.command(no_args_is_help=True)
def analyze(
    model: Path = typer.Argument(..., help="Float model: .keras, .h5, a SavedModel folder, or .onnx."),
    calib: Path = typer.Option(..., "--calib", "-c", help="Calibration data (.npy, .npz or image folder), as "
                                                          "for convert --mode int8."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", "-e", help=(
        "Held-out data to score layers on (.npz; labels 'y' enable top-1). Default: the calibration data.")),
    metric: Optional[Metric] = typer.Option(None, "--metric", help="Drop column's metric: top1 (needs labels) | "
                                                                   "agreement | cosine | sqnr."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="Analyze per-tensor weight quantization."),
    calib_samples: Optional[int] = typer.Option(None, "--calib-samples", min=1, help="Use the first N samples."),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Show only the N most harmful layers."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG bar chart here."),
    layout: Optional[Layout] = typer.Option(None, "--layout", help="Layout of 4-D data arrays (default NHWC)."),
    fallback: Fallback = typer.Option(Fallback.FP32, "--fallback", help=(
        "What each layer is kept in while scored: fp32 (float; fp16 ranks the same) or int16 (16-bit "
        "activations, int8 weights: the ranking `convert --mode mixed --fallback int16` uses).")),
    ptq: PtqChoice = typer.Option(PtqChoice.PLAIN, "--ptq", help=(
        "Which INT8 model the layers are ranked on: plain (the converter's own calibration, fast) or auto / "
        "learned / blocks (edgeq's prepared INT8 as `convert --mode int8` makes it: the model `convert --mode mixed` "
        "searches from by default).")),
    as_json: bool = typer.Option(False, "--json", help="Print every layer's numbers as JSON."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                 help="Progress bars on stderr (default: when it is a terminal)."),
) -> None:
    """Per-layer INT8 sensitivity: quantize the model once per layer with only that layer (and its output
    activation) left float, and rank layers by how much of the full-INT8 error goes away. The layers on top are what
    `convert --mode mixed` keeps in higher precision.

    Examples:

      edgeq analyze model.keras --calib calib.npz --eval eval.npz

      edgeq analyze model.keras --calib calib.npz --top 10 --plot sensitivity.png

      edgeq analyze saved_model/ --calib calib.npz --json > layers.json

      edgeq analyze model.onnx --calib calib.npz --eval eval.npz --ptq auto --fallback int16
    """
    from edgeq.api import analyze as run_analyze
    from edgeq.options import AnalyzeOptions

    options = AnalyzeOptions(metric=metric, per_channel=not per_tensor, calib_samples=calib_samples, layout=layout,
                             fallback=fallback, ptq=ptq)
    sens = run_analyze(model, calib, eval_data, options, plot=plot, progress=progress(show_progress))
    if as_json:
        emit_json({"model": str(model), **sens.to_dict(), "plot": str(plot) if plot else None})
    else:
        emit(render_sensitivity(sens, top) + (f"\nplot: {plot}" if plot else ""))
