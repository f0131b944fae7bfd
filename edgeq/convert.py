"""``convert``: any float source -> a TFLite model in the requested precision, with a report.

The pipeline is the same for every source and mode:
source -> FloatModel (SavedModel) -> calibration data -> FP32 reference conversion ->
converted model -> checks (full-INT8 really integer) -> accuracy against the float model -> atomic write.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

from edgeq.calib_check import calibration_warnings
from edgeq.data import Dataset, load_dataset
from edgeq.errors import ConversionError, first_line
from edgeq.evaluate import evaluate
from edgeq.fileio import atomic_write_bytes, check_writable
from edgeq.modelinfo import ModelInfo, inspect_tflite
from edgeq.modes import ConvertOptions, Layout, Mode
from edgeq.progress import Progress, Silent
from edgeq.quantize import kernel_workarounds
from edgeq.quantize.concat_ranges import squeezed_concat_inputs
from edgeq.quantize.converter import (ConverterSettings, make_converter, quantize_flatbuffer_source,
                                     quantize_float_flatbuffer, run_converter)
from edgeq.report import ConversionReport
from edgeq.sources import FloatModel, load_float_model, source_kind


def default_output(source: Path, mode: Mode) -> Path:
    """``<folder>/<stem>_<mode>.tflite`` beside the input (a SavedModel folder counts as its stem)."""
    source = Path(source)
    stem = source.name if source.is_dir() else source.stem
    return source.parent / f"{stem}_{mode.suffix}.tflite"


def representative_data(calib: Dataset, progress: Progress):
    """The converter's calibration callback: one sample at a time, keyed by signature input name."""
    def gen():
        with progress.task(f"calibrating on {len(calib)} samples", total=len(calib)) as step:
            for sample in calib.samples():
                yield sample
                step.advance()
    return gen


def quantize_float_model(fm: FloatModel, options: ConvertOptions, calib: Dataset | None,
                         progress: Progress, evalds: Dataset | None = None, extra: dict | None = None,
                         float_bytes: bytes | None = None) -> bytes:
    """Convert the float graph in ``options.mode``; the one place every mode goes through.

    ``float_bytes`` (the FP32 conversion of the same graph) lets calibrated modes skip a second float
    conversion."""
    if options.mode is Mode.MIXED:  # a budgeted search; it needs eval data and adds a report section
        from edgeq.quantize.mixed import quantize_mixed

        content, section = quantize_mixed(fm, options, calib, evalds, progress)
        if extra is not None:
            extra["mixed"] = section
        return content
    settings = ConverterSettings(mode=options.mode, io=options.io_type, per_channel=options.per_channel)
    if (options.mode in (Mode.INT8, Mode.INT16X8) and calib is not None
            and options.ptq.prepares):
        from edgeq.quantize.prepare.ptq import prepare_and_quantize  # graph preparation, measured per step

        content, plan = prepare_and_quantize(fm, settings, calib, progress, options.ptq)
        if extra is not None:
            extra["ptq"] = plan.to_dict()
        return content
    if options.mode in (Mode.INT8, Mode.INT16X8) and extra is not None:
        extra["ptq"] = {"choice": "plain", "summary": "plain (TFLiteConverter min/max calibration only, --ptq plain)"}
    rep = representative_data(calib, progress) if calib is not None else None
    if fm.float_tflite is not None:  # no TensorFlow graph: every mode from the float flatbuffer
        with progress.task(f"converting to {options.mode.value}"):
            return quantize_flatbuffer_source(fm.float_tflite, settings, rep, str(fm.source))
    converter = make_converter(fm.saved_model_dir, settings, rep)
    with progress.task(f"converting to {options.mode.value}"):
        if float_bytes is not None and rep is not None:
            return quantize_float_flatbuffer(float_bytes, converter, settings, str(fm.source))
        return run_converter(converter, settings, str(fm.source))


def check_result(info: ModelInfo, options: ConvertOptions, source: Path) -> None:
    """Refuse to write a model that is not what the mode promises."""
    if options.mode.spec.integer_only and info.float_ops:
        # the converter leaves an op float when LiteRT has no integer kernel for it, or when it could not
        # quantize it (a same-scale conflict, as silero-vad's LSTM cell had before state_concat): either way the
        # model is not all-integer
        raise ConversionError(f"{source}: full-INT8 is impossible: the quantizer left op(s) in float (no integer "
                              f"kernel, or not quantizable here): {', '.join(info.float_ops[:6])}; use "
                              "`mode=int8-fallback` to keep them in float")


def _quantize_from_flatbuffer_if_split(fm: FloatModel, float_bytes: bytes) -> None:
    """int8 activations from the FP32 flatbuffer, not TFLiteConverter's own run on the TF graph, when that
    flatbuffer has an FC over a concatenation with a carried state (onnx2tf's LSTM cell): only the flatbuffer
    route can split it per part before calibrating (:mod:`edgeq.tflite.transforms.state_concat`), and
    without the split the quantizer leaves the cell's forget-gate MUL in float."""
    from edgeq.tflite.transforms.state_concat import split_state_concats

    n = split_state_concats(float_bytes)[1]
    if n:
        fm.float_tflite = float_bytes  # every int8 step (plain, PTQ, mixed) now quantizes this flatbuffer
        fm.notes.append(f"{n} FULLY_CONNECTED over a concatenation with the carried state input split into one "
                        "per part plus ADD before calibrating (same numbers; the state keeps its own int8 "
                        "scale, so the cell has integer kernels)")


def _xnnpack(content: bytes) -> dict:
    """XNNPACK's coverage for the report; a model the delegate cannot allocate is said so, not fatal."""
    from edgeq.tflite.xnnpack import coverage

    try:
        return coverage(content).to_dict()
    except Exception as exc:  # noqa: BLE001 - a report line must never fail a finished conversion
        return {"summary": f"not measured ({first_line(exc)[:120]})"}


def convert(model: Path | str, options: ConvertOptions | None = None, out: Path | str | None = None,
            eval_data=None, progress: Progress | None = None,
            layout: Layout | None = None, source_options: dict | None = None) -> ConversionReport:
    """Convert ``model`` (.keras, .h5, SavedModel folder, .onnx or a float .tflite) and write the .tflite
    atomically.

    ``eval_data`` (.npz with ``x`` and optionally ``y``, or in-memory data as for ``calib``) adds top-1 of the float and converted models,
    or agreement/cosine/SQNR against the float model when it has no labels.
    """
    options = options or ConvertOptions()
    progress = progress or Silent()
    source = Path(model)
    kind = source_kind(source)
    out = Path(out) if out is not None else default_output(source, options.mode)
    check_writable(out, inputs=(source, options.calib if isinstance(options.calib, (str, Path)) else None,
                                eval_data if isinstance(eval_data, (str, Path)) else None))
    if options.mode.needs_calibration and options.calib is None:
        raise ConversionError(f"`mode={options.mode.value}` needs calibration data; give `calib=DATA` "
                              "(.npy, .npz, a folder or arrays of a few hundred representative inputs)")
    if options.mode is Mode.MIXED and eval_data is None:
        raise ConversionError("`mode=mixed` needs `eval_data=DATA` to check the accuracy budget on (held-out "
                              "samples, with labels 'y' for `metric=top1`); calibration data would flatter the "
                              "result")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with ExitStack() as stack:
        with progress.task(f"loading {source.name}"):
            # e.g. ONNX input_shapes; quantized activations let the ONNX source make encoders quantizable
            int8_acts = options.mode.spec.int8_activations
            on_disk = isinstance(options.calib, Path)  # the ONNX LayerNorm split reads a calibration .npz itself
            # entered at once, inside the task: a signal before the stack owns it would leak its temporary export
            fm = stack.enter_context(load_float_model(
                source, batch=options.batch, **{"quantized_activations": options.mode.needs_calibration,
                                                "calibration": options.calib if int8_acts and on_disk else None,
                                                **(source_options or {})}))
        timings["load"] = time.perf_counter() - t

        def read_data(fm: FloatModel):
            calib = evalds = None
            if options.mode.needs_calibration:
                calib = load_dataset(options.calib, fm.inputs, preprocess=options.preprocess,
                                     limit=options.calib_samples, layout=layout, name="calib")
            if eval_data is not None:  # read before converting: bad data should fail in a second, not a minute
                evalds = load_dataset(eval_data, fm.inputs, preprocess=options.preprocess, layout=layout,
                                      name="eval_data")
                evalds.check_labels(fm.outputs[0].shape[-1] if fm.outputs and len(fm.outputs[0].shape) > 1
                                    else None)
            return calib, evalds

        calib, evalds = read_data(fm)
        t = time.perf_counter()
        fp32 = ConverterSettings(mode=Mode.FP32, io=options.io_type)
        with progress.task("converting to fp32 (size reference)"):
            try:
                float_bytes = (fm.float_tflite if fm.float_tflite is not None
                               else run_converter(make_converter(fm.saved_model_dir, fp32), fp32, str(source)))
            except ConversionError as exc:
                fallback = fm.extra.get("flatbuffer_fallback")  # ONNX: onnx2tf's own float .tflite
                if fallback is None:
                    raise
                fm = stack.enter_context(fallback(exc))
                calib, evalds = read_data(fm)  # the flatbuffer's inputs may differ from the TF graph's
                float_bytes = fm.float_tflite
        timings["fp32"] = time.perf_counter() - t
        extra: dict = {}
        check_float = fm.extra.get("check_float")
        if check_float is not None:  # ONNX: float TFLite vs onnxruntime, before quantization can hide a bad graph
            with progress.task("checking the float model against its source"):
                extra["fidelity"] = check_float(float_bytes, calib or evalds,
                                                "calibration" if calib is not None else "evaluation")
        if int8_acts and fm.float_tflite is None:
            _quantize_from_flatbuffer_if_split(fm, float_bytes)
        t = time.perf_counter()
        content = (float_bytes if options.mode is Mode.FP32
                   else quantize_float_model(fm, options, calib, progress, evalds, extra, float_bytes))
        timings["convert"] = time.perf_counter() - t
        rewrite_notes: list[str] = []
        if options.mode.spec.float_activations:  # exact XNNPACK-friendly float ops
            from edgeq.tflite.transforms.clamp_ops import relu_0_to_1_as_min_max

            content, n = relu_0_to_1_as_min_max(content)
            if n:
                rewrite_notes.append(f"{n} RELU_0_TO_1 rewritten as MAXIMUM/MINIMUM (same numbers; XNNPACK has "
                                     "no RELU_0_TO_1 kernel, so each split the graph)")
        if options.mode.needs_calibration:  # integer activations: an integer input kept alive as x * 0
            from edgeq.tflite.transforms.zero_casts import zero_integer_casts

            content, n = zero_integer_casts(content)
            if n:
                rewrite_notes.append(f"{n} QUANTIZE(CAST(integer * 0)) replaced by an integer constant zero (same "
                                     "numbers; no float tensor, and the integer input stays in the signature)")
        from edgeq.tflite.transforms.xnnpack_exact import xnnpack_exact_rewrites

        content, counts = xnnpack_exact_rewrites(content)  # copies only: every mode, float or integer
        if counts:
            rewrite_notes.append(" and ".join(f"{n} {op}" for op, n in counts.items()) + " rewritten into forms "
                                 "XNNPACK delegates (explicit slice sizes; nearest upsampling as concatenation "
                                 "and reshape; int8 ops that return their input removed): same numbers")
        if options.mode.needs_calibration:  # integer activations: no float CAST for a boolean mask
            from edgeq.tflite.transforms.bool_select import bool_casts_as_select

            content, n = bool_casts_as_select(content)
            if n:
                rewrite_notes.append(f"{n} CAST(bool -> float) + QUANTIZE rewritten as SELECT_V2 of the two "
                                     "quantized values (same numbers, integer ops only)")
        info = inspect_tflite(content=content)
        check_result(info, options, source)
        extra["xnnpack"] = _xnnpack(content)
        accuracy = None
        if evalds is not None:
            t = time.perf_counter()
            with progress.task("float model on eval data"):
                reference = fm.predict(evalds.inputs)
            accuracy = evaluate(content, evalds, reference, progress)
            timings["eval"] = time.perf_counter() - t
        atomic_write_bytes(out, content)
        info.path = str(out)
        notes = (list(fm.notes) + (calib.notes if calib else []) + (evalds.notes if evalds else [])
                 + rewrite_notes)
        if requantized := kernel_workarounds.requantized_inputs(content):
            notes.append(kernel_workarounds.note(requantized))
        return ConversionReport(
            source=str(source), source_kind=kind, output=str(out), mode=options.mode.value,
            io=options.io_type.value, per_channel=options.per_channel, size_bytes=len(content),
            float_size_bytes=len(float_bytes), model=info, calib_samples=len(calib) if calib else None,
            accuracy=accuracy, notes=list(dict.fromkeys(notes)), timings_s=timings, extra=extra,
            warnings=calibration_warnings(calib, evalds, accuracy, options.mode is Mode.INT8)
            + (squeezed_concat_inputs(content) if options.mode.needs_calibration else []))
