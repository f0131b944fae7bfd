"""The conversion report: one typed result, printed as a table or as JSON."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from edgeq.evaluate import EvalResult
from edgeq.modelinfo import ModelInfo

SCHEMA_VERSION = 1  # of ConversionReport.to_dict(): bump when a field changes meaning or goes away


@dataclass
class ConversionReport:
    """What ``convert`` made, how big it is against FP32, and how accurate against the float model."""

    source: str
    source_kind: str
    output: str
    mode: str
    io: str
    per_channel: bool
    size_bytes: int
    float_size_bytes: int
    model: ModelInfo
    calib_samples: int | None = None
    accuracy: EvalResult | None = None
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # mode-specific sections (e.g. mixed precision, PTQ steps)
    warnings: list[str] = field(default_factory=list)  # likely wrong data (calib_check), lost values (concat_ranges)

    @property
    def size_ratio(self) -> float:
        return self.size_bytes / self.float_size_bytes if self.float_size_bytes else float("nan")

    def to_dict(self) -> dict:
        weights = [w for w in self.model.weights if w.channels > 0]
        return {
            "schema": SCHEMA_VERSION, "output": self.output, "source": self.source, "source_kind": self.source_kind, "mode": self.mode,
            "io": self.io, "per_channel": self.per_channel, "size_bytes": self.size_bytes,
            "float_size_bytes": self.float_size_bytes, "size_ratio": round(self.size_ratio, 4),
            "tensors_by_dtype": self.model.tensors_by_dtype, "op_counts": self.model.op_counts,
            "fully_integer": self.model.fully_integer,
            "quantized_weights": {"total": len(weights), "per_channel": sum(w.per_channel for w in weights)},
            "inputs": [vars(t) for t in self.model.inputs], "outputs": [vars(t) for t in self.model.outputs],
            "float_ops": self.model.float_ops, "calib_samples": self.calib_samples,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "notes": self.notes, "warnings": self.warnings, "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), indent=2)

    def render(self) -> str:
        """A readable plain-text report."""
        rows = [
            ("output", self.output),
            ("source", f"{self.source} ({self.source_kind})"),
            ("mode", f"{self.mode}  (I/O {self.io}, weights {'per-channel' if self.per_channel else 'per-tensor'})"),
            ("size", f"{_kb(self.size_bytes)}  = {self.size_ratio:.3f} x FP32 ({_kb(self.float_size_bytes)})"),
            ("tensors", ", ".join(f"{k} {v}" for k, v in self.model.tensors_by_dtype.items())),
            ("ops", ", ".join(f"{k} {v}" for k, v in self.model.op_counts.items())),
            ("integer-only", _integer_text(self.model)),
        ]
        weights = [w for w in self.model.weights if w.channels > 0]
        if weights:
            rows.append(("quantized weights", f"{len(weights)}, {sum(w.per_channel for w in weights)} per-channel"))
        if self.calib_samples:
            rows.append(("calibration", f"{self.calib_samples} samples"))
        if self.accuracy is not None:
            rows += accuracy_rows(self.accuracy)
        for k, v in self.extra.items():
            if isinstance(v, dict) and "summary" in v:
                rows.append((k, str(v["summary"])))
        if self.timings_s:
            rows.append(("time", ", ".join(f"{k} {v:.2f}s" for k, v in self.timings_s.items())))
        return _table(rows + [("note", n) for n in self.notes] + [("WARNING", w) for w in self.warnings])


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.rjust(width)}  {v}" for k, v in rows)


def accuracy_rows(a: EvalResult) -> list[tuple[str, str]]:
    """Report rows for an accuracy result (shared by convert and eval)."""
    rows = []
    if a.top1 is not None and a.float_top1 is not None:
        rows.append(("top-1", f"{100 * a.top1:.2f}%  (float {100 * a.float_top1:.2f}%, "
                              f"drop {a.drop_points:+.2f} pt, {a.samples} samples)"))
    elif a.top1 is not None:
        rows.append(("top-1", f"{100 * a.top1:.2f}%  ({a.samples} samples)"))
    if a.vs_float is not None:
        v = a.vs_float
        rows.append(("vs float", f"top-1 agreement {100 * v.agreement:.2f}%, cosine {v.cosine:.5f}, "
                                 f"SQNR {v.sqnr_db:.1f} dB, max |err| {v.max_abs_error:.4g}"))
    if not rows:
        rows.append(("samples", f"{a.samples} (no labels and no reference: nothing to compare)"))
    return rows


def render_eval(a: EvalResult, model) -> str:
    """Plain-text result of ``edgeq eval``."""
    return _table([("model", str(model)), ("data", a.data)] + accuracy_rows(a))


def _io_text(t) -> str:
    q = f" scale {t.scale:.6g} zero point {t.zero_point}" if t.scale is not None else ""
    return f"{t.name}  {t.dtype} {list(t.shape)}{q}"


def render_info(info: ModelInfo) -> str:
    """Plain-text result of ``edgeq inspect``."""
    rows = [("model", info.path), ("size", _kb(info.size_bytes))]
    rows += [("input", _io_text(t)) for t in info.inputs]
    rows += [("output", _io_text(t)) for t in info.outputs]
    rows.append(("ops", f"{sum(info.op_counts.values())}: " + ", ".join(f"{k} {v}" for k, v in info.op_counts.items())))
    rows.append(("tensors", ", ".join(f"{k} {v}" for k, v in info.tensors_by_dtype.items())))
    rows.append(("integer-only", _integer_text(info)))
    for w in info.weights:
        q = (f"per-channel ({w.channels} channels)" if w.per_channel else
             "per-tensor" if w.channels == 1 else "not quantized")
        rows.append(("weight", f"{w.op:<18} {w.dtype:<7} {str(list(w.shape)):<18} {q}  {w.name}"))
    rows += [("bytes", f"{k}: {_kb(v)}") for k, v in info.size_by_group.items()]
    if info.float_ops and not info.fully_integer:
        shown = ", ".join(info.float_ops[:8]) + (" ..." if len(info.float_ops) > 8 else "")
        rows.append(("float ops", f"{len(info.float_ops)}: {shown}"))
    if info.xnnpack is not None:
        rows.append(("xnnpack", info.xnnpack["summary"]))
    rows += [("kernel hazard", h) for h in info.kernel_hazards[:6]]
    if len(info.kernel_hazards) > 6:
        rows.append(("kernel hazard", f"... {len(info.kernel_hazards) - 6} more (edgeq convert requantizes them)"))
    return _table(rows)


def _integer_text(info: ModelInfo) -> str:
    if info.fully_integer:
        return "yes"
    if not info.float_ops:
        return "yes, with float I/O (quantize/dequantize at the boundary)"
    return f"no ({len(info.float_ops)} ops compute in float)"


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _finite(x):
    """JSON has no inf/nan: write them as strings so every parser reads the file."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
