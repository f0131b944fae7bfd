"""TFLiteConverter settings for each precision mode, and errors mapped to what the user can do.

All modes convert from the FloatModel's SavedModel, the one float graph every source becomes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from edgeq.errors import ConversionError, first_line
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
    mode, spec = settings.mode, settings.mode.spec
    if not spec.optimize:
        return c
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    if spec.fp16_weights:
        c.target_spec.supported_types = [tf.float16]
    if spec.calibrated:
        if representative is None:
            raise ConversionError(f"`mode={mode.value}` needs calibration data; give `calib=DATA` "
                                  "(a few hundred representative inputs)")
        c.representative_dataset = representative
    if spec.op_set == "int8":
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = _tf_io_type(tf, settings.io)
        c.inference_output_type = _tf_io_type(tf, settings.io)
    elif spec.op_set == "int16x8":
        c.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    # no op set (int8-fallback): integer kernels where they exist, float elsewhere
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
            content = converter.convert()
    except ConversionError:
        raise
    except Exception as exc:
        text = f"{exc}\n{last_captured()}"
        ops = sorted({m.group(1) for pat in _UNSUPPORTED for m in pat.finditer(text)})
        if ops:
            hint = (" use --mode int8-fallback to keep them in float" if settings.mode.spec.integer_only
                    else " the model needs ops LiteRT's builtin set lacks; replace them in the model")
            raise ConversionError(f"{source}: cannot convert op(s) {', '.join(ops)} to {settings.mode.value};{hint}") \
                from exc
        first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), str(exc).strip()[:200])
        raise ConversionError(f"{source}: TFLiteConverter failed in mode {settings.mode.value}: {first[:300]} "
                              "(rerun with --debug for the converter log)") from exc
    return apply_kernel_workarounds(content) if settings.mode.spec.int8_activations else content


def apply_kernel_workarounds(content: bytes) -> bytes:
    """Every int8 model leaves the converter through here: requantize the inputs LiteRT kernels get wrong
    (see :mod:`edgeq.quantize.kernel_workarounds`)."""
    from edgeq.quantize.kernel_workarounds import fix_int8_kernels

    return fix_int8_kernels(content)[0]


def calibrate_flatbuffer(float_bytes: bytes, converter) -> bytes:
    """Calibrate and quantize an FP32 flatbuffer with ``converter``'s settings: the second half of
    TFLiteConverter's post-training path (convert to float, then calibrate and quantize), through its
    private methods. Raises whatever they raise; :func:`quantize_float_flatbuffer` is the safe caller."""
    from tensorflow.lite.python import lite as tflite_lite

    tf = quiet_tf()
    qm = tflite_lite.QuantizationMode(
        converter.optimizations, converter.target_spec, converter.representative_dataset, None,
        experimental_mlir_variable_quantization=converter._experimental_variable_quantization)  # noqa: SLF001
    flags = dict(converter._get_base_converter_args())  # noqa: SLF001
    flags.update(qm.converter_flags())
    debug = tflite_lite._build_conversion_flags(**flags).debug_options  # noqa: SLF001
    with quiet_native_output():
        model = converter._quantize(  # noqa: SLF001
            float_bytes, converter.inference_input_type or tf.float32, converter.inference_output_type or tf.float32,
            qm.activations_type(), qm.bias_type(), qm.is_allow_float(), qm.enable_mlir_variable_quantization, debug)
        return tflite_lite._deduplicate_readonly_buffers(model)  # noqa: SLF001 - as convert() does


def quantize_flatbuffer_source(float_bytes: bytes, settings: ConverterSettings,
                               representative: RepresentativeData | None, source: str) -> bytes:
    """Any mode made from a float flatbuffer alone: the path of a float .tflite source, which has no
    TensorFlow graph for TFLiteConverter. fp16 and dynamic rewrite the weights (dynamic as int8 weights
    dequantized at load, since hybrid kernels need the converter); the calibrated modes run TFLite's
    calibrator and quantizer on the flatbuffer, as TFLiteConverter does after its float conversion."""
    from edgeq.quantize.fp16_weights import weights_to_fp16, weights_to_int8

    quiet_tf()  # the schema and calibrator modules import TensorFlow: quiet its start-up log first
    mode, spec = settings.mode, settings.mode.spec
    if not spec.optimize:
        return float_bytes
    try:
        if spec.fp16_weights:
            return weights_to_fp16(float_bytes, None)
        if not spec.calibrated:  # dynamic range
            return weights_to_int8(float_bytes)
        if representative is None:
            raise ConversionError(f"mode {mode.value} needs calibration data (a few hundred representative inputs)")
        if spec.op_set == "int16x8":
            from edgeq.quantize.int16x8 import quantize_16x8

            return quantize_16x8(float_bytes, representative, not settings.per_channel)
        from edgeq.quantize.selective import Calibrated

        return Calibrated.from_float_flatbuffer(float_bytes, representative, settings.per_channel, settings.io,
                                                source).quantize()
    except ConversionError:
        raise
    except Exception as exc:
        raise ConversionError(f"{source}: quantizing the float flatbuffer to {mode.value} failed: "
                              f"{first_line(exc)[:200]} (rerun with --debug for the log)") from exc


def quantize_float_flatbuffer(float_bytes: bytes, converter, settings: ConverterSettings, source: str) -> bytes:
    """The calibrated modes' model from the FP32 flatbuffer the pipeline already made.

    edgeq converts the float graph to FP32 anyway (the size reference); converting it a second time
    inside ``converter.convert()`` only costs time (1.8 s of 10 on the MobileNet sample). Tests pin that
    :func:`calibrate_flatbuffer` computes exactly what ``converter.convert()`` gives. Should the private
    API fail (another TensorFlow), the public ``convert()`` runs instead, with its errors mapped.
    """
    try:
        if settings.mode.spec.op_set == "int16x8":  # TF's 16x8 quantizer fails on integer tensors and breaks SUM
            from edgeq.quantize.int16x8 import quantize_16x8

            rep = converter.representative_dataset
            content = quantize_16x8(float_bytes, getattr(rep, "input_gen", rep), not settings.per_channel)
        else:
            content = calibrate_flatbuffer(float_bytes, converter)
    except Exception:
        return run_converter(converter, settings, source)
    return apply_kernel_workarounds(content) if settings.mode.spec.int8_activations else content
