"""Typed conversion settings: precision modes, I/O types, calibration preprocessing."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgeq.coerce import as_enum, as_optional_enum, as_path


class Mode(str, Enum):
    """The precision a converted model runs in."""

    FP32 = "fp32"  # plain float conversion, the size and accuracy reference
    FP16 = "fp16"  # float16 weights, float32 compute on CPU (GPU delegates run fp16)
    DYNAMIC = "dynamic"  # int8 weights, float activations quantized on the fly
    INT8 = "int8"  # full integer: every op int8, int8 I/O by default
    INT8_FALLBACK = "int8-fallback"  # int8 where an integer kernel exists, float elsewhere, float I/O
    INT16X8 = "int16x8"  # int16 activations, int8 weights
    MIXED = "mixed"  # int8 except the layers an accuracy-budget search keeps in fp16/fp32/int16x8

    @property
    def spec(self) -> ModeSpec:
        """What this mode is (``MODES``): the one place a mode's behaviour is decided."""
        return MODES[self]

    @property
    def needs_calibration(self) -> bool:
        return self.spec.calibrated

    @property
    def suffix(self) -> str:
        """File-name suffix for the default output path."""
        return self.value.replace("-", "_")


class IOType(str, Enum):
    """Data type of the converted model's inputs and outputs."""

    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"


@dataclass(frozen=True)
class ModeSpec:
    """A precision mode's answers to what the pipeline asks of it."""

    calibrated: bool  # needs representative data (integer activations somewhere)
    int8_activations: bool  # int8 activation kernels: LiteRT kernel workarounds, quantizable encoder rewrites
    integer_only: bool  # every op must come out integer: a float leftover is refused, not written
    default_io: IOType
    op_set: str | None = None  # TFLiteConverter's target op set: "int8", "int16x8", or its default builtins
    fp16_weights: bool = False
    optimize: bool = True  # TFLiteConverter's Optimize.DEFAULT (off: the plain float conversion)

    @property
    def float_activations(self) -> bool:
        return not self.calibrated


MODES: dict[Mode, ModeSpec] = {
    Mode.FP32: ModeSpec(False, False, False, IOType.FLOAT32, optimize=False),
    Mode.FP16: ModeSpec(False, False, False, IOType.FLOAT32, fp16_weights=True),
    Mode.DYNAMIC: ModeSpec(False, False, False, IOType.FLOAT32),
    # int8 I/O: what NPUs and microcontrollers want from a full-integer model
    Mode.INT8: ModeSpec(True, True, True, IOType.INT8, op_set="int8"),
    Mode.INT8_FALLBACK: ModeSpec(True, True, False, IOType.FLOAT32),  # default op set: float where no int kernel
    Mode.INT16X8: ModeSpec(True, False, False, IOType.FLOAT32, op_set="int16x8"),
    # made by the budget search (quantize/mixed.py) from one calibration, not by one converter call
    Mode.MIXED: ModeSpec(True, True, False, IOType.FLOAT32),
}


def default_io(mode: Mode) -> IOType:
    """The I/O type a mode's model gets unless the user asks for another."""
    return mode.spec.default_io


class Metric(str, Enum):
    """What a mixed-precision budget limits, in points lost against the float model."""

    TOP1 = "top1"  # top-1 accuracy points (needs labels)
    AGREEMENT = "agreement"  # % of samples whose top-1 class differs from the float model's
    COSINE = "cosine"  # 100 * (1 - cosine similarity of the outputs)
    SQNR = "sqnr"  # output noise power in % of signal power (1 = 20 dB SQNR)


class Fallback(str, Enum):
    """Precision of the layers a mixed plan keeps out of INT8."""

    FP16 = "fp16"  # float16 weights, float32 compute: half the bytes of fp32
    FP32 = "fp32"  # for runtimes without float16 weights (microcontrollers)
    INT16 = "int16"  # int16 activations, int8 weights (16x8 kernels): still all-integer, for NPUs/DSPs

    @property
    def is_float(self) -> bool:
        return self is not Fallback.INT16


class PtqChoice(str, Enum):
    """How full-INT8 prepares the float graph before the converter calibrates it."""

    # BN folding, equalization, bias correction, range clipping, learned rounding: each kept only if it helps
    AUTO = "auto"
    # AUTO's steps plus an end-to-end activation range search (it quantizes the model 18 more times)
    LEARNED = "learned"
    # AUTO's steps, with block reconstruction competing against layer-by-layer rounding (2-3x its time; worth
    # trying with a few hundred calibration samples, docs/ptq.md)
    BLOCKS = "blocks"
    PLAIN = "plain"  # the converter's own min/max calibration, nothing else

    @property
    def prepares(self) -> bool:
        """Whether the PTQ pipeline (``quantize/prepare/ptq.py``) runs, rather than the converter alone."""
        return self is not PtqChoice.PLAIN


class Layout(str, Enum):
    """Axis order of image data: TFLite wants NHWC, ONNX models are usually NCHW."""

    NHWC = "nhwc"
    NCHW = "nchw"


@dataclass(frozen=True)
class Preprocess:
    """How a folder of images becomes model input: resize, then (pixel/255 - mean) / std."""

    resize: tuple[int, int] | None = None  # (height, width); None: the model's input size
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale_255: bool = True  # divide pixels by 255 before mean/std

    def __post_init__(self) -> None:
        # Lists and scalars from library callers become the tuples the arithmetic expects.
        as_tuple = lambda v: tuple(float(x) for x in (v if isinstance(v, (list, tuple)) else (v,)))  # noqa: E731
        object.__setattr__(self, "mean", as_tuple(self.mean))
        object.__setattr__(self, "std", as_tuple(self.std))
        if self.resize is not None:
            object.__setattr__(self, "resize", (int(self.resize[0]), int(self.resize[1])))


@dataclass(frozen=True)
class ConvertOptions:
    """Everything that decides what ``convert`` produces.

    Enum fields accept their string values (``mode="int8"``, ``io="uint8"``); an unknown value raises
    :class:`edgeq.errors.EdgeqError` listing the valid ones. ``calib`` is a path (.npy, .npz, image folder) or
    in-memory data: numpy arrays, a dict of them per input, an iterable of samples or a ``tf.data.Dataset``.
    """

    mode: Mode = Mode.INT8
    io: IOType | None = None  # None: default_io(mode); int8 for mixed with int16 fallback (all-integer)
    per_channel: bool = True
    calib: Path | Any | None = None  # a path, or in-memory data (see edgeq.data.load_dataset)
    calib_samples: int | None = None  # None: all of them
    preprocess: Preprocess = field(default_factory=Preprocess)
    max_drop: float = 1.0  # mixed: budget in points of ``metric`` lost against the float model
    metric: Metric | None = None  # mixed: None = top1 with labels, agreement without
    fallback: Fallback = Fallback.FP16  # mixed: precision of the layers kept out of INT8
    ptq: PtqChoice = PtqChoice.AUTO  # int8: graph preparation before calibration (see quantize/prepare)
    batch: int | None = 1  # fixed batch of the converted model (None: keep the source's dynamic batch)

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: coerce once, here
        set_("mode", as_enum(Mode, self.mode, "mode"))
        set_("io", as_optional_enum(IOType, self.io, "io"))
        set_("metric", as_optional_enum(Metric, self.metric, "metric"))
        set_("fallback", as_enum(Fallback, self.fallback, "fallback"))
        set_("ptq", as_enum(PtqChoice, self.ptq, "ptq"))
        set_("calib", as_path(self.calib))
        if isinstance(self.preprocess, dict):
            set_("preprocess", Preprocess(**self.preprocess))

    @property
    def io_type(self) -> IOType:
        if self.io is None and self.mode is Mode.MIXED and self.fallback is Fallback.INT16:
            return IOType.INT8  # all-integer, like --mode int8: what the NPUs this fallback is for want
        return self.io or default_io(self.mode)
