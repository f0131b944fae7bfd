"""Calibrate once, quantize many times: the engine behind ``analyze`` and ``--mode mixed``.

Calibration (running the float graph on every calibration sample to record activation ranges) is the
slow part of a full-INT8 conversion. TFLiteConverter can stop after it and return the calibrated float
model; quantizing that model with a list of layers to leave in float ("denylisted nodes") then takes a
fraction of a second. So a search over which layers stay float costs one calibration, not one per try.
The int8 part is exactly what ``--mode int8`` makes from the same calibration data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import ConversionError, first_line
from edgeq.modes import Fallback, IOType
from edgeq.nativeio import quiet_native_output
from edgeq.quantize.converter import RepresentativeData
from edgeq.tfenv import quiet_tf
from edgeq.tflite.flatbuffer import mixed_activation_ops

# Ops that stay as they are (data movement or graph plumbing): nothing to decide for them.
NOT_CANDIDATES = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE", "CAST", "GATHER"}


@dataclass(frozen=True)
class Layer:
    """A quantizable op of the calibrated model, named by its output tensor (the converter's handle)."""

    index: int
    op: str
    node: str  # output tensor name: what ``denylisted_nodes`` takes
    macs: int

    @property
    def short(self) -> str:
        # A graph output keeps the signature's tensor name ('StatefulPartitionedCall:0'): name it by its op.
        return short_name(self.node) if "/" in self.node else f"{self.op.lower()} (output)"


_MAIN = re.compile(r"/(convolution|depthwise|MatMul|BiasAdd|conv2d_transpose|Conv2D|einsum\w*)$")


def short_name(node: str) -> str:
    """A readable layer name from a fused location such as 'model/b0_dw_1/depthwise;model/b0_bn_1/...'.

    Picks the piece naming the layer's main op (conv, matmul), else the first piece, and returns its
    layer component without Keras' '_1' call suffix.
    """
    pieces = node.split(";")
    piece = next((p for p in pieces if _MAIN.search(p)), pieces[0])
    parts = [p for p in piece.split("/") if p]
    name = parts[-2] if len(parts) >= 2 else parts[0] if parts else node
    return re.sub(r"_\d+$", "", name) or node


def _by_position(content: bytes, representative: RepresentativeData) -> RepresentativeData:
    """TFLite's calibrator reads dict samples through the model's signature; a flatbuffer without one
    (some exporters write none) gets the samples as a list in input-tensor order instead."""
    from edgeq.runtime import TFLiteRunner

    runner = TFLiteRunner(content=content)
    if runner.interp.get_signature_list():
        return representative
    order = [d["name"] for d in runner.input_details]

    def gen():
        for sample in representative():
            yield [sample[n] for n in order] if set(sample) == set(order) else list(sample.values())
    return gen


class Calibrated:
    """A calibrated float model that can be quantized with any set of layers left in float."""

    def __init__(self, content: bytes, per_channel: bool, io: IOType, source: str):
        self.content = content
        self.per_channel = per_channel
        self.io = io
        self.source = source
        self._int8: bytes | None = None  # full INT8, the base every int16-fallback candidate is rewritten from
        self._biases: dict | None = None

    def with_content(self, content: bytes) -> "Calibrated":
        """The same settings around an edited calibrated model (what flatbuffer PTQ steps return)."""
        return type(self)(content, self.per_channel, self.io, self.source)

    @classmethod
    def from_saved_model(cls, saved_model_dir: Path, representative: RepresentativeData, per_channel: bool,
                         io: IOType, source: str) -> "Calibrated":
        """Run TFLiteConverter's calibration once on the float SavedModel."""
        tf = quiet_tf()
        c = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.experimental_mlir_quantizer = True
        c._experimental_calibrate_only = True  # noqa: SLF001 - the documented route of QuantizationDebugger
        try:
            with quiet_native_output():
                content = c.convert()
        except Exception as exc:
            raise ConversionError(f"{source}: calibration failed: {first_line(exc)[:200]} "
                                  "(rerun with --debug for the converter log)") from exc
        return cls(content, per_channel, io, source)

    @classmethod
    def from_float_flatbuffer(cls, float_bytes: bytes, representative: RepresentativeData, per_channel: bool,
                              io: IOType, source: str) -> "Calibrated":
        """Run TFLite's calibrator on a float flatbuffer (a .tflite source): what ``from_saved_model`` does
        after TFLiteConverter has made the float model.

        A FULLY_CONNECTED over a concatenation with a carried state (onnx2tf's LSTM cell) is first split
        per part (:mod:`edgeq.tflite.transforms.state_concat`): same numbers, and the only form the
        quantizer makes all-integer."""
        from tensorflow.lite.python.optimize import calibrator

        from edgeq.tflite.transforms.state_concat import split_state_concats

        quiet_tf()
        float_bytes = split_state_concats(float_bytes)[0]
        try:
            with quiet_native_output():
                prepared = calibrator.add_intermediate_tensors(float_bytes)
                content = calibrator.Calibrator(prepared).calibrate(_by_position(float_bytes, representative))
        except Exception as exc:
            raise ConversionError(f"{source}: calibration failed: {first_line(exc)[:200]} "
                                  "(rerun with --debug for the log)") from exc
        return cls(content, per_channel, io, source)

    @classmethod
    def from_float_model(cls, fm, representative: RepresentativeData, per_channel: bool, io: IOType,
                         source: str) -> "Calibrated":
        """Calibrate any FloatModel: its SavedModel, or its float flatbuffer when it has no graph."""
        if fm.float_tflite is not None:
            return cls.from_float_flatbuffer(fm.float_tflite, representative, per_channel, io, source)
        return cls.from_saved_model(fm.saved_model_dir, representative, per_channel, io, source)

    def layers(self) -> list[Layer]:
        """Every op a mixed plan can leave in float, in graph order."""
        from edgeq.quantize.macs import op_records

        return [Layer(r.index, r.op, r.name, r.macs) for r in op_records(content=self.content)
                if r.op not in NOT_CANDIDATES]

    def consumers(self) -> dict[str, list[str]]:
        """Layer node -> nodes of the candidate layers that read its output.

        Leaving one op float keeps its weights exact, but its output is still rounded to int8 for an int8
        consumer; the activation stays float only when its consumers are float too.
        """
        from edgeq.modelinfo import open_interpreter

        interp = open_interpreter(content=self.content)
        names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
        nodes = {layer.node for layer in self.layers()}
        ops = interp._get_ops_details()  # noqa: SLF001
        readers: dict[int, list[str]] = {}
        for op in ops:
            out = names[op["outputs"][0]] if len(op["outputs"]) else None
            for i in op["inputs"]:
                if out in nodes:
                    readers.setdefault(i, []).append(out)
        return {names[op["outputs"][0]]: readers.get(op["outputs"][0], []) for op in ops
                if len(op["outputs"]) and names[op["outputs"][0]] in nodes}

    def quantize(self, float_nodes: list[str] | tuple[str, ...] = (), fp16_weights: bool = False) -> bytes:
        """INT8 everywhere except ``float_nodes`` (output tensor names), which stay float.

        ``fp16_weights`` stores those float layers' weights as float16 (half the bytes; LiteRT
        dequantizes them once when the model is loaded, compute stays float32).
        """
        float_nodes = list(float_nodes)
        out = self._mlir_quantize(float_nodes)
        # TF's quantizer keeps a same-scale op such as CONCATENATION int8 when a producer is int8, even when
        # the op is denylisted, and feeds it one float input: a model no kernel runs. Such producers go float
        # too, until every op reads one kind of activation.
        candidates = None
        while float_nodes and (mixed := mixed_activation_ops(out)):
            candidates = candidates or {layer.node for layer in self.layers()}
            more = [n for _, _, ints in mixed for n in ints if n in candidates and n not in float_nodes]
            if not more:
                op, node, ints = mixed[0]
                raise ConversionError(f"{self.source}: keeping {len(float_nodes)} layer(s) float leaves {op} "
                                      f"'{node}' reading int8 '{ints[0]}' beside float inputs; keep fewer layers "
                                      "float or use --fallback int16")
            float_nodes += more
            out = self._mlir_quantize(float_nodes)
        if fp16_weights and float_nodes:
            from edgeq.quantize.fp16_weights import weights_to_fp16

            out = weights_to_fp16(out, set(float_nodes))
        from edgeq.quantize.converter import apply_kernel_workarounds

        return apply_kernel_workarounds(out)

    def _mlir_quantize(self, float_nodes: list[str]) -> bytes:
        tf = quiet_tf()
        from tensorflow.lite.python import convert as tfconvert

        io = {IOType.FLOAT32: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8}[self.io]
        try:
            with quiet_native_output():
                return tfconvert.mlir_quantize(
                    self.content, disable_per_channel=not self.per_channel, fully_quantize=io != tf.float32,
                    input_data_type=io, output_data_type=io, denylisted_nodes=float_nodes or None)
        except Exception as exc:
            raise ConversionError(f"{self.source}: quantizing with {len(float_nodes)} float layer(s) failed: "
                                  f"{first_line(exc)[:200]}") from exc

    def quantize_int16(self, int16_nodes: list[str] | tuple[str, ...] = ()) -> bytes:
        """INT8 everywhere except ``int16_nodes`` (output tensor names), which run LiteRT's 16x8 kernels
        (int16 activations, int8 weights): an all-integer model (see :mod:`edgeq.quantize.int16_fallback`)."""
        from edgeq.quantize.int16_fallback import float_biases, to_int16

        if self._int8 is None:
            self._int8, self._biases = self.quantize(), float_biases(self.content)
        return to_int16(self._int8, int16_nodes, self._biases).content

    def candidate(self, nodes: list[str] | tuple[str, ...], fallback: Fallback) -> bytes:
        """INT8 except ``nodes``, kept in ``fallback`` precision."""
        if fallback is Fallback.INT16:
            return self.quantize_int16(nodes)
        return self.quantize(nodes, fp16_weights=fallback is Fallback.FP16)
