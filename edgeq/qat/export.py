"""Fine-tuned models out: a real full-INT8 .tflite from the fake-quant graph, and the fine-tuned float .keras.

The .tflite is converted *without* calibration data: every tensor's range comes from the fake-quant ops the
fine-tuning trained, so the integer model computes what training simulated. Writes are atomic (temporary
file in the same folder, then rename): Ctrl-C never leaves a half-written file.
"""
from __future__ import annotations

from pathlib import Path

from edgeq.errors import ConversionError
from edgeq.fileio import atomic_output, atomic_write_bytes, check_writable, make_output_folder
from edgeq.modelinfo import ModelInfo, inspect_tflite
from edgeq.modes import IOType, Mode
from edgeq.quantize.converter import ConverterSettings, _tf_io_type, run_converter
from edgeq.sources.keras import from_keras_object
from edgeq.tfenv import quiet_tf


def to_tflite(qat_model, io: IOType, source: Path) -> bytes:
    """Convert the fake-quant Keras model to an integer TFLite model with ``io`` inputs and outputs."""
    tf = quiet_tf()
    with from_keras_object(qat_model, Path(source)) as fm:  # the same SavedModel route as every other source
        c = tf.lite.TFLiteConverter.from_saved_model(str(fm.saved_model_dir))
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        # No supported_ops=[TFLITE_BUILTINS_INT8] here: with it the converter demands a representative dataset,
        # which QAT does not need (ranges come from the fake-quant ops). The result is checked below instead.
        c.inference_input_type = _tf_io_type(tf, io)
        c.inference_output_type = _tf_io_type(tf, io)
        return run_converter(c, ConverterSettings(mode=Mode.INT8, io=io), str(source))


def check_integer(info: ModelInfo, io: IOType, source: Path) -> None:
    """Refuse to ship a model that is not what QAT promises: integer compute, per-channel conv weights."""
    if info.float_ops:
        raise ConversionError(f"{source}: the QAT export still computes in float: {', '.join(info.float_ops[:6])}; "
                              "rerun with --debug and report it")
    if io is not IOType.FLOAT32 and not info.fully_integer:
        raise ConversionError(f"{source}: the QAT export has float tensors "
                              f"({', '.join(k for k in info.tensors_by_dtype)}); rerun with --debug and report it")
    convs = [w for w in info.weights if w.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and w.channels > 0]
    if any(not w.per_channel and w.shape[3 if w.op == "DEPTHWISE_CONV_2D" else 0] > 1 for w in convs):
        raise ConversionError(f"{source}: the QAT export has per-tensor conv weights; rerun with --debug and "
                              "report it")


def output_paths(out_dir: Path, source: Path) -> tuple[Path, Path]:
    """``<out>/<stem>_qat_int8.tflite`` and ``<out>/<stem>_qat.keras``."""
    stem = source.name if source.is_dir() else source.stem
    return out_dir / f"{stem}_qat_int8.tflite", out_dir / f"{stem}_qat.keras"


def check_out_dir(out_dir: Path, source: Path, inputs=()) -> None:
    """Fail before minutes of training when the outputs cannot be written or would replace an input."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"{out_dir}: is a file; `out_dir` takes a folder")
    if out_dir.exists():
        for p in output_paths(out_dir, source):
            check_writable(p, inputs=(source, *inputs))
    else:
        check_writable(out_dir, inputs=(source, *inputs))  # its parent folder must exist and be writable


def save_keras_atomic(model, path: Path) -> Path:
    """``model.save`` through a temporary ``.keras`` file in the same folder, then rename."""
    with atomic_output(path, suffix=".keras") as tmp:  # Keras picks the format from the suffix
        model.save(tmp)
    return Path(path)


def write_outputs(out_dir: Path, source: Path, tflite: bytes, float_model) -> tuple[Path, Path]:
    """Write both outputs (folder created if needed); each file appears complete or not at all."""
    out_dir = Path(out_dir)
    make_output_folder(out_dir)
    tfl, keras_path = output_paths(out_dir, source)
    save_keras_atomic(float_model, keras_path)
    atomic_write_bytes(tfl, tflite)
    return tfl, keras_path


def inspect_export(content: bytes, io: IOType, source: Path) -> ModelInfo:
    info = inspect_tflite(content=content)
    check_integer(info, io, source)
    return info
