"""TFLiteConverter settings for each precision mode, and errors mapped to what the user can do.

All modes convert from the FloatModel's SavedModel, the one float graph every source becomes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from edgeq.errors import ConversionError
from edgeq.modes import IOType, Mode
from edgeq.nativeio import last_captured, quiet_native_output
from edgeq.tfenv import quiet_tf

RepresentativeData = Callable[[], Iterable[dict]]


@dataclass(frozen=True)
class ConverterSettings:
    """What one TFLiteConverter call is asked to do."""

    mode: Mode
    io: IOType
    per_channel: bool = True


def _tf_io_type(tf, io: IOType):
    return {IOType.FLOAT32: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8}[io]


def make_converter(saved_model_dir: Path, settings: ConverterSettings,
                   representative: RepresentativeData | None = None):
    """A configured ``tf.lite.TFLiteConverter``; call ``convert_with(converter)`` to run it."""
    tf = quiet_tf()
    c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    mode = settings.mode
    if mode is Mode.FP32:
        return c
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Mode.FP16:
        c.target_spec.supported_types = [tf.float16]
    elif mode is Mode.DYNAMIC:
        pass
    else:
        if representative is None:
            raise ConversionError(f"--mode {mode.value} needs calibration data; give --calib DATA "
                                  "(a few hundred representative inputs)")
        c.representative_dataset = representative
        if mode is Mode.INT8:
            c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            c.inference_input_type = _tf_io_type(tf, settings.io)
            c.inference_output_type = _tf_io_type(tf, settings.io)
        elif mode is Mode.INT16X8:
            c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        # INT8_FALLBACK keeps the default op set: integer kernels where they exist, float elsewhere.
    if not settings.per_channel:
        c._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only per-tensor switch
    return c


_UNSUPPORTED = [
    re.compile(r"Quantization not yet supported for op: '?([\w.]+)'?"),
    re.compile(r"'(tf\.\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"failed to legalize operation '([\w.]+)'"),
    re.compile(r"op '?([\w.]+)'? is not supported"),
]


def run_converter(converter, settings: ConverterSettings, source: str) -> bytes:
    """Run ``converter.convert()`` quietly; converter failures become one-line ConversionErrors."""
    try:
        with quiet_native_output():
            return converter.convert()
    except ConversionError:
        raise
    except Exception as exc:
        text = f"{exc}\n{last_captured()}"
        ops = sorted({m.group(1) for pat in _UNSUPPORTED for m in pat.finditer(text)})
        if ops:
            hint = (" use --mode int8-fallback to keep them in float" if settings.mode is Mode.INT8
                    else " the model needs ops LiteRT's builtin set lacks; replace them in the model")
            raise ConversionError(f"{source}: cannot convert op(s) {', '.join(ops)} to {settings.mode.value};{hint}") \
                from exc
        first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), str(exc).strip()[:200])
        raise ConversionError(f"{source}: TFLiteConverter failed in mode {settings.mode.value}: {first[:300]} "
                              "(rerun with --debug for the converter log)") from exc
