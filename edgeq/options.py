"""Every option type of the library, in one place; each accepts the string values of its enums.

``ConvertOptions`` and the enums live in :mod:`edgeq.modes` (re-exported here); the others are the typed
inputs of :mod:`edgeq.api`'s workflows. None of this imports TensorFlow or numpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.coerce import as_enum, as_optional_enum, as_path
from edgeq.errors import OptionError
from edgeq.modes import ConvertOptions, Fallback, IOType, Layout, Metric, Mode, Preprocess, PtqChoice

__all__ = ["AnalyzeOptions", "BenchOptions", "CompareOptions", "ConvertOptions", "EvalOptions", "Fallback",
           "FinetuneOptions", "IOType", "Layout", "Metric", "Mode", "Preprocess", "PtqChoice"]


def _positive(value: int | None, name: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or value < 1:
        raise OptionError(f"{name}={value!r} is not valid; give a whole number >= 1")


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses: coerce once, in __post_init__


@dataclass(frozen=True)
class AnalyzeOptions:
    """How ``analyze`` measures per-layer INT8 sensitivity."""

    metric: Metric | None = None  # None: top1 with labels, agreement without
    per_channel: bool = True
    calib_samples: int | None = None  # None: every calibration sample
    layout: Layout | None = None  # 4-D data layout; None: NHWC, NCHW detected
    fallback: Fallback = Fallback.FP32  # what a layer is kept in while scored: float, or int16 (16x8 kernels)
    # plain: rank on the converter's calibration; auto/learned: on edgeq's prepared INT8 (what --mode mixed
    # searches from by default)
    ptq: PtqChoice = PtqChoice.PLAIN

    def __post_init__(self) -> None:
        _set(self, "metric", as_optional_enum(Metric, self.metric, "metric"))
        _set(self, "layout", as_optional_enum(Layout, self.layout, "layout"))
        _set(self, "fallback", as_enum(Fallback, self.fallback, "fallback"))
        _set(self, "ptq", as_enum(PtqChoice, self.ptq, "ptq"))
        _positive(self.calib_samples, "calib_samples")


@dataclass(frozen=True)
class EvalOptions:
    """How ``evaluate`` reads its data."""

    eval_samples: int | None = None  # None: every sample
    layout: Layout | None = None

    def __post_init__(self) -> None:
        _set(self, "layout", as_optional_enum(Layout, self.layout, "layout"))
        _positive(self.eval_samples, "eval_samples")


@dataclass(frozen=True)
class FinetuneOptions:
    """How ``finetune`` trains with simulated INT8 and exports (see docs/qat.md)."""

    epochs: int = 1
    learning_rate: float = 1e-4  # about 1/10 of a from-scratch Adam rate
    batch_size: int = 64
    seed: int = 0  # data order, dropout and calibration samples: same seed, same result
    io: IOType = IOType.INT8
    ptq_calib_samples: int = 300  # training samples for the post-training INT8 baseline
    distill_weight: float | None = None  # share of the distillation loss; None: 0 with labels, 1 without
    patience: int = 2  # epochs without a better agreement with float before stopping (the best epoch is kept)
    keep_better: bool = True  # write post-training INT8 instead when QAT does not beat it on the eval data

    def __post_init__(self) -> None:
        _set(self, "io", as_enum(IOType, self.io, "io"))
        if self.distill_weight is not None and not 0.0 <= self.distill_weight <= 1.0:
            raise OptionError(f"`distill_weight={self.distill_weight}`: give a share between 0 and 1")
        for name in ("epochs", "batch_size", "ptq_calib_samples", "patience"):
            _positive(getattr(self, name), name, allow_none=False)


@dataclass(frozen=True)
class BenchOptions:
    """Where and how ``bench`` runs models: host settings, and device settings for adb/ssh targets."""

    targets: tuple[str, ...] = ("host",)  # 'host', a profile name/.toml, adb[:SERIAL], ssh://user@host[:port]
    threads: tuple[int, ...] | None = None  # None: each target's profile
    runs: int = 50
    warmup: int = 5
    xnnpack: bool = True
    delegate_lib: Path | None = None  # host: an external delegate .so instead of XNNPACK
    delegate_options: dict[str, str] = field(default_factory=dict)
    inputs: Any = None  # .npz path or in-memory data (its first sample is fed); None: random data in range
    benchmark_binary: str | None = None  # devices: LiteRT's benchmark_model (local file or device path)
    delegate: str | None = None  # devices: xnnpack|none|gpu|nnapi|hexagon|external:LIB.so
    cores: str = "all"  # devices: all|big|HEXMASK
    op_profile: bool = False
    check_outputs: bool = False
    timeout_s: float = 600.0
    ssh_identity: Path | None = None
    known_hosts: Path | None = None
    accept_new_host_key: bool = False

    def __post_init__(self) -> None:
        targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
        if not targets:
            raise OptionError("targets=() is not valid; give at least one target, e.g. ('host',)")
        _set(self, "targets", targets)
        if self.threads is not None:
            threads = (self.threads,) if isinstance(self.threads, int) else tuple(self.threads)
            for t in threads:
                _positive(t, "threads", allow_none=False)
            _set(self, "threads", threads)
        _positive(self.runs, "runs", allow_none=False)
        _positive(self.warmup, "warmup", allow_none=False)
        for name in ("delegate_lib", "ssh_identity", "known_hosts"):
            _set(self, name, as_path(getattr(self, name)))
        _set(self, "inputs", as_path(self.inputs))


@dataclass(frozen=True)
class CompareOptions:
    """What ``compare`` puts side by side: accuracy from reports or data, latency from targets or results."""

    targets: tuple[str, ...] = ()  # benchmark now on these; () with no results: host
    reports: tuple[Any, ...] = ()  # 'edgeq convert --json' reports (paths, or ConversionReport objects)
    results: tuple[Any, ...] = ()  # 'edgeq bench --json' files or BenchResult objects already measured
    eval_data: Any = None  # labelled data (path or in-memory): top-1 of every variant
    threads: tuple[int, ...] | None = None
    runs: int = 50
    warmup: int = 5

    def __post_init__(self) -> None:
        for name in ("targets", "reports", "results"):
            v = getattr(self, name)
            _set(self, name, (v,) if isinstance(v, (str, Path)) else tuple(v))
        if self.threads is not None:
            _set(self, "threads", (self.threads,) if isinstance(self.threads, int) else tuple(self.threads))
        _set(self, "eval_data", as_path(self.eval_data))
        _positive(self.runs, "runs", allow_none=False)
        _positive(self.warmup, "warmup", allow_none=False)
