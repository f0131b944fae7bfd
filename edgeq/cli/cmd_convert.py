"""``edgeq convert``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import complete_target, emit, emit_json, progress, warn
from edgeq.errors import DataError
from edgeq.modes import ConvertOptions, Fallback, IOType, Layout, Metric, Mode, Preprocess, PtqChoice


def parse_floats(text: str | None, what: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise DataError(f"{what} '{text}': give comma-separated numbers, e.g. 0.485,0.456,0.406") from None


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
        return h, w
    except ValueError:
        raise DataError(f"--resize '{text}': give HEIGHTxWIDTH, e.g. 224x224") from None


def parse_batch(text: str) -> int | None:
    """``--batch``: a positive integer, or 'dynamic' (None)."""
    if text.strip().lower() == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"--batch '{text}': give a positive batch size (e.g. 1) or 'dynamic'")
    return value


def parse_input_shapes(items: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["ids=1,128", ...]`` -> ``{"ids": (1, 128)}``; onnx2tf's ``ids:1,128`` form too (names may hold ':',
    so without '=' the last ':' separates)."""
    shapes = {}
    for item in items or []:
        name, _, dims = item.partition("=") if "=" in item else item.rpartition(":")
        try:
            shapes[name.strip()] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise DataError(f"--input-shape '{item}': give NAME=D0,D1,... (or onnx2tf's NAME:D0,D1,...), e.g. input_ids=1,128") from None
        if not name.strip():
            raise DataError(f"--input-shape '{item}': give NAME=D0,D1,..., e.g. input_ids=1,128")
    return shapes


@app.command(no_args_is_help=True)
def convert(
    model: Path = typer.Argument(..., help="Float model: .keras, .h5, a SavedModel folder, .onnx or a float .tflite."),
    mode: Optional[Mode] = typer.Option(None, "--mode", "-m", show_default="int8, or what --target wants", help=(
        "fp32 | fp16 (half-size weights) | dynamic (int8 weights, float activations) | int8 (full integer, "
        "int8 I/O: NPUs, Edge TPU, microcontrollers) | int8-fallback (integer where possible, float elsewhere) "
        "| int16x8 (16-bit activations, 8-bit weights: for models int8 hurts) | mixed (int8 except the layers "
        "an accuracy budget needs in fp16/fp32/int16x8: see --max-drop and --fallback; needs --eval).")),
    calib: Optional[Path] = typer.Option(None, "--calib", "-c", help=(
        "Calibration data for int8/int8-fallback/int16x8: .npy, .npz (array 'x' or one per input name) "
        "or a folder of images. Use a few hundred *training* samples, not the eval set.")),
    calib_samples: Optional[int] = typer.Option(None, "--calib-samples", min=1,
                                                help="Use only the first N calibration samples."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", "-e", help=(
        "Data to measure accuracy on in the same run: .npz with 'x' and labels 'y' gives top-1 of float and "
        "converted model; without labels, top-1 agreement, cosine and SQNR against the float model.")),
    io: Optional[IOType] = typer.Option(None, "--io", help="Input/output type. Default: int8 for --mode int8, "
                                                           "float32 otherwise."),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One scale per weight tensor instead of one per "
                                                                "output channel (to compare; usually worse)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .tflite. Default: beside the input, "
                                                                 "named <stem>_<mode>.tflite."),
    resize: Optional[str] = typer.Option(None, "--resize", help="Image-folder calibration: resize to HxW."),
    mean: Optional[str] = typer.Option(None, "--mean", help="Image folders: per-channel mean after /255, "
                                                            "e.g. 0.485,0.456,0.406."),
    std: Optional[str] = typer.Option(None, "--std", help="Image folders: per-channel std after /255."),
    layout: Optional[Layout] = typer.Option(None, "--layout", help="Layout of 4-D data arrays. Default: NHWC, "
                                                                   "and NCHW data is detected and transposed."),
    input_shape: Optional[list[str]] = typer.Option(None, "--input-shape", help=(
        "ONNX: fix dynamic dims of an input, NAME=D0,D1,... (repeat per input), e.g. "
        "--input-shape input_ids=1,128 --input-shape attention_mask=1,128 (onnx2tf's NAME:D0,D1,... works too).")),
    batch: str = typer.Option("1", "--batch", help=(
        "Batch size the converted model is fixed to: 1 (default, what a deployed model runs: static shapes "
        "need no SHAPE/STRIDED_SLICE/PACK ops, so XNNPACK takes Flatten/Reshape models whole), N, or "
        "'dynamic' to keep the source's dynamic batch.")),
    target: Optional[str] = typer.Option(None, "--target", "-t", autocompletion=complete_target, help=(
        "Device profile (edgeq targets list): picks --mode when not given (coral-edgetpu: int8, android-gpu: "
        "fp16 ...) and warns about ops its accelerator will not run.")),
    max_drop: float = typer.Option(1.0, "--max-drop", min=0.0, help=(
        "--mode mixed: accuracy budget, in points of --metric lost against the float model "
        "(e.g. 0.5 = at most half a point of top-1).")),
    metric: Optional[Metric] = typer.Option(None, "--metric", help=(
        "--mode mixed: what the budget limits: top1 (needs labels; default with labels), agreement "
        "(% of top-1 classes differing from the float model; default without labels), cosine (100*(1-cos)), "
        "sqnr (output noise in % of signal power).")),
    fallback: Fallback = typer.Option(Fallback.FP16, "--fallback", help=(
        "--mode mixed: precision of the layers kept out of INT8: fp16 (float16 weights, half the bytes), "
        "fp32 (for runtimes without float16, e.g. microcontrollers) or int16 (16-bit activations, 8-bit "
        "weights: the model stays all-integer, int8 I/O by default, for NPUs/DSPs with 16x8 kernels).")),
    ptq: PtqChoice = typer.Option(PtqChoice.AUTO, "--ptq", help=(
        "--mode int8: auto (BN folding, cross-layer equalization, bias correction, activation-range clipping, "
        "learned weight rounding: each fitted on 3/4 of the calibration data and kept only when it measurably "
        "helps on the rest; the report lists what each gained and took), learned (auto plus a search of "
        "activation ranges by their effect on the output: slower), blocks (auto, with the weights' rounding "
        "and biases also fitted jointly per block, e.g. an inverted residual, with the int8 activations in "
        "the loop; the better of the two on the held-back data is kept; 2-3x slower, worth trying with a "
        "few hundred calibration samples) or plain (the converter's own min/max calibration, for "
        "comparison). --mode int16x8: auto, learned and blocks fit the int8 weights' rounding and biases "
        "on the int16 activations (16x8 loses little else); plain is TensorFlow's 16x8 quantizer.")),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (for scripts)."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                 help="Progress bars on stderr (default: when it is a terminal)."),
) -> None:
    """Convert a float model to TFLite and report size and accuracy against the float model.

    Examples:

      edgeq convert model.keras --mode int8 --calib calib.npz --eval eval.npz

      edgeq convert saved_model/ --mode fp16 --out model_fp16.tflite --json

      edgeq convert model.keras --mode int8 --ptq plain --calib calib.npz --eval eval.npz

      edgeq convert model.keras --mode mixed --max-drop 0.5 --calib calib.npz --eval eval.npz

      edgeq convert model.keras --target coral-edgetpu --calib calib.npz

      edgeq convert model_float32.tflite --mode int8 --calib calib.npz

      edgeq convert encoder.onnx --mode int8 --calib tokens.npz --input-shape input_ids=1,128 --input-shape attention_mask=1,128
    """
    from edgeq.api import convert as run_convert
    from edgeq.targets import load_target, target_warnings

    profile = load_target(target) if target else None
    mode = mode or (profile.precision if profile else Mode.INT8)

    pre = Preprocess(resize=parse_size(resize), mean=parse_floats(mean, "--mean") or (0.0,),
                     std=parse_floats(std, "--std") or (1.0,))
    options = ConvertOptions(mode=mode, io=io, per_channel=not per_tensor, calib=calib,
                             calib_samples=calib_samples, preprocess=pre, max_drop=max_drop, metric=metric,
                             fallback=fallback, ptq=ptq, batch=parse_batch(batch))
    report = run_convert(model, options, out=out, eval_data=eval_data, progress=progress(show_progress),
                         layout=layout, input_shapes=parse_input_shapes(input_shape) or None)
    emit_json(report.to_dict()) if as_json else emit(report.render())
    for line in target_warnings(profile, report.model, mode) if profile else []:
        warn(line)
