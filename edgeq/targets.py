"""Target profiles: what a device kind is, how edgeq reaches it, what precision it wants, which ops it runs.

Profiles are TOML files: the built-in ones ship inside the package (``edgeq/profiles/*.toml``, read with
``importlib.resources`` so an installed wheel has them), more can come from ``$EDGEQ_TARGETS_DIR`` (one or more
folders, ``os.pathsep``-separated; they win over built-ins of the same name), or any ``.toml`` path given as the
target name. The op lists are the documented accelerator support (approximate by
nature: a compiler or delegate decides per op and version); ``edgeq bench`` measures the real coverage.
"""
from __future__ import annotations

import os
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

from edgeq.errors import TargetError
from edgeq.modes import Mode

if TYPE_CHECKING:
    from edgeq.modelinfo import ModelInfo

BUILTIN_TARGETS: Traversable = files("edgeq") / "profiles"  # package data, present in every install
PROJECT_TARGETS = BUILTIN_TARGETS  # the old name (profiles used to live in the repo's targets/)


class Transport(str, Enum):
    """How edgeq reaches the device."""

    LOCAL = "local"  # this machine
    ADB = "adb"  # an Android device over adb
    SSH = "ssh"  # a Linux board (Raspberry Pi ...) over ssh


class DelegateKind(str, Enum):
    """Which accelerator path LiteRT uses (benchmark_model flag in brackets)."""

    NONE = "none"  # builtin CPU kernels (--use_xnnpack=false)
    XNNPACK = "xnnpack"  # optimized CPU (--use_xnnpack=true, the default)
    GPU = "gpu"  # OpenCL/OpenGL GPU delegate (--use_gpu=true)
    NNAPI = "nnapi"  # Android NNAPI (--use_nnapi=true; deprecated since Android 15)
    EXTERNAL = "external"  # a vendor .so (--external_delegate_path=..., e.g. Qualcomm QNN, Coral Edge TPU)


@dataclass(frozen=True)
class Cpu:
    cores: int = 0  # 0: detect on the device
    big_core_mask: str | None = None  # hex affinity mask for `taskset` (Android big cores); None: no pinning
    arch: str = "aarch64"


@dataclass(frozen=True)
class Delegate:
    kind: DelegateKind = DelegateKind.XNNPACK
    library: str | None = None  # external delegate .so path on the device
    options: dict[str, str] = field(default_factory=dict)  # --external_delegate_options / delegate settings


@dataclass(frozen=True)
class OpLimits:
    """What the target's accelerator runs; anything else falls back to the CPU (or fails to compile)."""

    accelerator: str = ""  # e.g. "Edge TPU"
    supported_ops: tuple[str, ...] = ()  # allowlist; empty: no allowlist
    unsupported_ops: tuple[str, ...] = ()  # denylist
    requires_fully_integer: bool = False  # any float tensor sends that op (and what follows) to the CPU
    slow_modes: tuple[Mode, ...] = ()  # modes the target runs on slow reference kernels


@dataclass(frozen=True)
class TargetProfile:
    """One device kind, as read from its TOML file."""

    name: str
    description: str
    transport: Transport
    precision: Mode  # what `edgeq convert --target NAME` uses when --mode is not given
    threads: int = 1
    cpu: Cpu = field(default_factory=Cpu)
    delegates: tuple[Delegate, ...] = (Delegate(),)
    op_limits: OpLimits = field(default_factory=OpLimits)
    address: str | None = None  # ssh "user@host" or adb serial; None: the only connected device
    benchmark_binary: str | None = None  # benchmark_model path on the device (device runs)
    work_dir: str | None = None  # where models are pushed on the device
    notes: str = ""
    emulated: bool = False  # e.g. a qemu stand-in: edgeq marks its latency as no device speed
    source: str = ""  # the file it was read from

    def to_dict(self) -> dict:
        d = asdict(self)
        return _plain(d)


def _plain(v):
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def search_dirs() -> list[Path | Traversable]:
    """Folders holding profiles, first match wins: each folder of $EDGEQ_TARGETS_DIR, then the built-ins."""
    extra = [Path(d) for d in os.environ.get("EDGEQ_TARGETS_DIR", "").split(os.pathsep) if d]
    return [*extra, BUILTIN_TARGETS]


def _profiles(folder: Path | Traversable) -> list[Path | Traversable]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name.endswith(".toml") and p.is_file()]


def known_targets() -> list[str]:
    """Names of every profile edgeq can find (built-in and $EDGEQ_TARGETS_DIR), sorted."""
    return sorted({p.name.removesuffix(".toml") for d in search_dirs() for p in _profiles(d)})


def load_target(name: str) -> TargetProfile:
    """The profile called ``name`` (or read from ``name`` when it is a .toml path)."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.is_file():
            raise TargetError(f"target file {name}: no such file")
        return parse_target(path)
    for d in search_dirs():
        path = d / f"{name}.toml"
        if d.is_dir() and path.is_file():
            return parse_target(path)
    raise TargetError(f"unknown target '{name}'; known targets: {', '.join(known_targets()) or 'none'} "
                      "(or give a .toml profile path)")


def parse_target(path: Path | Traversable) -> TargetProfile:
    """Read and validate one TOML profile; every problem is one TargetError line naming the file and key."""
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"target file {path}: not valid TOML ({exc})") from None
    key = "?"
    try:
        key = "transport"
        transport = Transport(data["transport"])
        key = "precision"
        precision = Mode(data["precision"])
        key = "cpu"
        cpu = Cpu(**data.get("cpu", {}))
        key = "delegates"
        delegates = tuple(Delegate(kind=DelegateKind(d.get("kind", "xnnpack")), library=d.get("library"),
                                   options={k: str(v) for k, v in d.get("options", {}).items()})
                          for d in data.get("delegates", [{"kind": "xnnpack"}]))
        key = "op_limits"
        lim = dict(data.get("op_limits", {}))
        limits = OpLimits(accelerator=lim.get("accelerator", ""),
                          supported_ops=tuple(o.upper() for o in lim.get("supported_ops", [])),
                          unsupported_ops=tuple(o.upper() for o in lim.get("unsupported_ops", [])),
                          requires_fully_integer=bool(lim.get("requires_fully_integer", False)),
                          slow_modes=tuple(Mode(m) for m in lim.get("slow_modes", [])))
        key = "threads"
        threads = int(data.get("threads", 1))
        return TargetProfile(name=data.get("name", path.name.removesuffix(".toml")), description=data.get("description", ""),
                             transport=transport, precision=precision, threads=threads, cpu=cpu,
                             delegates=delegates, op_limits=limits, address=data.get("address"),
                             benchmark_binary=data.get("benchmark_binary"), work_dir=data.get("work_dir"),
                             notes=data.get("notes", ""), emulated=bool(data.get("emulated", False)),
                             source=str(path))
    except (KeyError, ValueError, TypeError) as exc:
        raise TargetError(f"target file {path}: bad or missing '{key}' ({exc})") from None


@dataclass(frozen=True)
class OpWarning:
    """An op (type) in a converted model that the target's accelerator will not run."""

    op: str
    count: int
    reason: str

    def __str__(self) -> str:
        return f"{self.op} x{self.count}: {self.reason}"


def unsupported_ops(profile: TargetProfile, info: ModelInfo, mode: Mode | None = None) -> list[OpWarning]:
    """Ops of ``info`` (a converted model) that ``profile``'s accelerator will leave to the CPU."""
    lim = profile.op_limits
    acc = lim.accelerator or profile.name
    out: list[OpWarning] = []
    for op, n in info.op_counts.items():
        if op in lim.unsupported_ops:
            out.append(OpWarning(op, n, f"{acc} does not run it; it runs on the CPU and splits the graph"))
        elif lim.supported_ops and op not in lim.supported_ops:
            out.append(OpWarning(op, n, f"not in {acc}'s supported ops; it runs on the CPU and splits the graph"))
    if lim.requires_fully_integer and info.float_ops:  # float I/O alone is fine: QUANTIZE/DEQUANTIZE at the edges
        float_ops = Counter(f.split(" ")[0] for f in info.float_ops)
        listed = ", ".join(f"{op} x{n}" for op, n in float_ops.most_common())
        out.append(OpWarning("float ops", sum(float_ops.values()),
                             f"{listed} compute in float; {acc} runs only integer ops "
                             "(convert with --mode int8)"))
    if mode is not None and mode in lim.slow_modes:
        out.append(OpWarning(f"mode {mode.value}", sum(info.op_counts.values()),
                             f"{acc} has no fast kernels for {mode.value}; its ops run on slow CPU reference "
                             "kernels"))
    return out


def target_warnings(profile: TargetProfile, info: ModelInfo, mode: Mode | None = None) -> list[str]:
    """The lines ``edgeq convert --target`` prints on stderr, one per op (type) the accelerator won't run."""
    return [f"edgeq: warning: target {profile.name}: {w}" for w in unsupported_ops(profile, info, mode)]
