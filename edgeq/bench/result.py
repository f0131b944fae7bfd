"""Typed benchmark results: one shape for the host runner, the benchmark_model parser and device runs.

Every producer (``edgeq.bench.host`` running ai-edge-litert in a subprocess, ``edgeq.bench.parser`` reading
LiteRT ``benchmark_model`` text, device runners over adb/ssh) yields a :class:`BenchResult`, so reports and
comparisons never care where the numbers came from. All times are milliseconds; ``None`` means "not measured /
not reported by the tool", never zero. ``to_dict``/``from_dict`` round-trip through JSON.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class LatencyStats:
    """Distribution of per-run latencies of one phase (warmup or inference), in milliseconds."""

    count: int
    mean_ms: float | None = None
    std_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p5_ms: float | None = None  # benchmark_model reports p5/median/p95; newer builds only
    p95_ms: float | None = None

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        """Statistics of raw per-run timings (percentiles by linear interpolation, population std)."""
        if not samples_ms:
            return cls(count=0)
        xs = sorted(float(s) for s in samples_ms)
        n = len(xs)
        mean = sum(xs) / n
        std = (sum((x - mean) ** 2 for x in xs) / n) ** 0.5
        return cls(count=n, mean_ms=mean, std_ms=std, min_ms=xs[0], max_ms=xs[-1],
                   p50_ms=_percentile(xs, 50), p90_ms=_percentile(xs, 90), p99_ms=_percentile(xs, 99),
                   p5_ms=_percentile(xs, 5), p95_ms=_percentile(xs, 95))


def _percentile(sorted_xs: list[float], q: float) -> float:
    pos = (len(sorted_xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class DelegateCoverage:
    """How much of the graph one delegate took (partial delegation is the usual silent slowdown)."""

    delegate: str  # e.g. "TfLiteXNNPackDelegate", "TfLiteGpuDelegateV2", "QnnDelegate"
    nodes_delegated: int
    nodes_total: int
    partitions: int | None = None
    not_delegated: tuple[str, ...] = ()  # op names left on the CPU, when the producer knows them

    @property
    def fully_delegated(self) -> bool:
        return self.nodes_total > 0 and self.nodes_delegated == self.nodes_total

    def describe(self) -> str:
        """E.g. ``TfLiteXNNPackDelegate: 63 of 66 nodes delegated (2 partitions)``."""
        parts = f" ({self.partitions} partition{'s' if self.partitions != 1 else ''})" if self.partitions else ""
        left = f"; on CPU: {', '.join(self.not_delegated)}" if self.not_delegated else ""
        return f"{self.delegate}: {self.nodes_delegated} of {self.nodes_total} nodes delegated{parts}{left}"


@dataclass(frozen=True)
class OpProfileRow:
    """One row of an op-profiling table (per node, or per node type when ``name`` is empty)."""

    node_type: str
    name: str = ""
    avg_ms: float | None = None
    percent: float | None = None
    times_called: int | None = None


@dataclass
class BenchResult:
    """Everything one benchmark run of one model on one target with one thread count produced."""

    model: str  # model path as given (host) or as on the device
    target: str = "host"
    threads: int | None = None
    delegate: str | None = None  # requested delegate: "xnnpack", "gpu", "none", an external .so path ...
    init_ms: float | None = None
    first_inference_ms: float | None = None
    warmup: LatencyStats | None = None
    inference: LatencyStats = field(default_factory=lambda: LatencyStats(count=0))
    peak_memory_mb: float | None = None
    delegation: list[DelegateCoverage] = field(default_factory=list)
    op_profile: list[OpProfileRow] = field(default_factory=list)
    device: dict[str, str] = field(default_factory=dict)  # facts: cpu, os, tool version, model size ...
    error: str | None = None  # one line; set when the run failed (timings then absent)
    output_tail: str = ""  # last lines of the tool's output, for failed runs and debugging
    tool: str = "litert-python"  # "litert-python" | "benchmark_model" | ...
    emulated: str | None = None  # why the target is known to be emulated: its latency is no device speed

    @property
    def ok(self) -> bool:
        """A run that produced at least an average latency (the oldest benchmark_model prints only that)."""
        return self.error is None and self.inference.mean_ms is not None

    @property
    def partially_delegated(self) -> list[DelegateCoverage]:
        """Delegates that took some but not all nodes."""
        return [d for d in self.delegation if not d.fully_delegated]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BenchResult:
        d = {k: v for k, v in d.items() if k != "schema"}
        warm = d.get("warmup")
        return cls(
            model=d["model"],
            target=d.get("target", "host"),
            threads=d.get("threads"),
            delegate=d.get("delegate"),
            init_ms=d.get("init_ms"),
            first_inference_ms=d.get("first_inference_ms"),
            warmup=LatencyStats(**warm) if warm else None,
            inference=LatencyStats(**d.get("inference", {"count": 0})),
            peak_memory_mb=d.get("peak_memory_mb"),
            delegation=[DelegateCoverage(**{**x, "not_delegated": tuple(x.get("not_delegated", ()))})
                        for x in d.get("delegation", [])],
            op_profile=[OpProfileRow(**x) for x in d.get("op_profile", [])],
            device=dict(d.get("device", {})),
            error=d.get("error"),
            output_tail=d.get("output_tail", ""),
            tool=d.get("tool", "litert-python"),
            emulated=d.get("emulated"),
        )
