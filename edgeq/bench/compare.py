"""One table of model variants x targets: size, accuracy and latency together, plus a Pareto plot.

Latency comes from :class:`BenchResult` objects (host runs, parsed benchmark_model output, device runs);
accuracy from ``edgeq convert --json`` reports or from an eval run. Nothing here measures anything itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.bench.result import BenchResult
from edgeq.errors import DataError


@dataclass(frozen=True)
class Accuracy:
    value: float  # percent
    metric: str  # "top1" | "agreement"
    source: str  # report file or eval data


@dataclass
class Variant:
    """One model file and everything known about it."""

    model: str
    size_bytes: int
    accuracy: Accuracy | None = None
    mode: str | None = None
    latency: dict[str, BenchResult] = field(default_factory=dict)  # by target name

    @property
    def name(self) -> str:
        return Path(self.model).stem


@dataclass
class Comparison:
    variants: list[Variant]
    targets: list[str]
    notes: list[str] = field(default_factory=list)  # e.g. why no plot was written

    def emulated(self, target: str) -> str | None:
        """Why ``target`` is emulated (then its latency is no device speed), or None."""
        return next((r.emulated for v in self.variants if (r := v.latency.get(target)) and r.emulated), None)

    def to_dict(self) -> dict:
        out = []
        for v in self.variants:
            lat = {}
            for t, r in v.latency.items():
                lat[t] = {"p50_ms": r.inference.p50_ms, "mean_ms": r.inference.mean_ms,
                          "p90_ms": r.inference.p90_ms, "threads": r.threads, "tool": r.tool,
                          "peak_memory_mb": r.peak_memory_mb, "error": r.error,
                          "delegation": [d.describe() for d in r.delegation], "emulated": r.emulated}
            out.append({"model": v.model, "name": v.name, "mode": v.mode, "size_bytes": v.size_bytes,
                        "accuracy": None if v.accuracy is None else {
                            "value": v.accuracy.value, "metric": v.accuracy.metric, "source": v.accuracy.source},
                        "latency": lat})
        return {"targets": self.targets, "variants": out, "pareto": {t: pareto_front(self, t) for t in self.targets},
                "emulated": {t: why for t in self.targets if (why := self.emulated(t))}}


def latency_ms(r: BenchResult | None) -> float | None:
    """p50 when the tool gave one, else the mean (old benchmark_model builds)."""
    if r is None or not r.ok:
        return None
    return r.inference.p50_ms if r.inference.p50_ms is not None else r.inference.mean_ms


def build(models: list[Path], results: list[BenchResult], accuracies: dict[str, Accuracy],
          modes: dict[str, str] | None = None) -> Comparison:
    """Join results and accuracies to models by file name (device paths differ from local ones)."""
    variants, targets = [], []
    for r in results:
        if r.target not in targets:
            targets.append(r.target)
    for m in models:
        m = Path(m)
        v = Variant(model=str(m), size_bytes=m.stat().st_size if m.is_file() else 0,
                    accuracy=accuracies.get(m.name), mode=(modes or {}).get(m.name))
        for r in results:
            if Path(r.model).name == m.name:
                best = v.latency.get(r.target)
                # several thread counts: keep the fastest, as a user would deploy it
                if best is None or (latency_ms(r) or float("inf")) < (latency_ms(best) or float("inf")):
                    v.latency[r.target] = r
        variants.append(v)
    return Comparison(variants=variants, targets=targets)


def read_reports(paths: list[Path]) -> tuple[dict[str, Accuracy], dict[str, str]]:
    """Accuracy (top-1, else agreement with the float model) and mode by output file name, from
    ``edgeq convert --json`` reports."""
    acc, modes = {}, {}
    for p in paths:
        try:
            d = json.loads(Path(p).read_text())
            name = Path(d["output"]).name
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"--reports {p}: not an 'edgeq convert --json' report ({exc})") from None
        modes[name] = d.get("mode")
        a = d.get("accuracy") or {}
        if a.get("top1") is not None:
            acc[name] = Accuracy(100.0 * a["top1"], "top1", str(p))
        elif (a.get("vs_float") or {}).get("agreement") is not None:
            acc[name] = Accuracy(100.0 * a["vs_float"]["agreement"], "agreement", str(p))
    return acc, modes


def pareto_front(c: Comparison, target: str) -> list[str]:
    """Variants no other variant beats on both latency (lower) and accuracy (higher) on ``target``."""
    pts = [(v.name, latency_ms(v.latency.get(target)), v.accuracy.value if v.accuracy else None)
           for v in c.variants]
    pts = [(n, lat, a) for n, lat, a in pts if lat is not None and a is not None]
    front = []
    for n, lat, a in pts:
        dominated = any((l2 <= lat and a2 >= a) and (l2 < lat or a2 > a) for _, l2, a2 in pts)
        if not dominated:
            front.append(n)
    return front


def render_markdown(c: Comparison) -> str:
    metric = next((v.accuracy.metric for v in c.variants if v.accuracy), "top1")
    head = ["variant", "mode", "size KB", f"accuracy ({metric}) %"] + [
        f"{t} p50 ms" + (" EMULATED" if c.emulated(t) else "") for t in c.targets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fronts = {t: set(pareto_front(c, t)) for t in c.targets}
    for v in c.variants:
        cells = [v.name, v.mode or "-", f"{v.size_bytes / 1024:.1f}",
                 f"{v.accuracy.value:.2f}" if v.accuracy else "-"]
        for t in c.targets:
            r = v.latency.get(t)
            lat = latency_ms(r)
            if lat is None:
                cells.append("failed" if r is not None else "-")
                continue
            cell = f"{lat:.3f}" if lat < 10 else f"{lat:.1f}"
            if r.partially_delegated:
                d = r.partially_delegated[0]
                cell += f" ({d.nodes_delegated}/{d.nodes_total} delegated)"
            cells.append(cell + (" *" if v.name in fronts[t] else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\n`*` on the latency/accuracy Pareto front of that target (nothing is both faster and more "
                 "accurate). Latency: p50 of the timed runs, fastest thread count.")
    lines += [f"\nEMULATED {t}: {c.emulated(t)}. Its latency is not a device speed and not comparable with the "
              "other columns." for t in c.targets if c.emulated(t)]
    return "\n".join(lines) + "\n"


def _label(ax, items: list[tuple[str, float, float]]) -> None:
    """Annotate points, moving a label down when it would sit on one already placed (equal-accuracy variants)."""
    placed: list[tuple[float, float]] = []
    for text, x, y in sorted(items, key=lambda i: (-i[2], i[1])):
        px, py = ax.transData.transform((x, y))
        dy = 6
        while any(abs(px - qx) < 120 and abs(py + dy - qy) < 14 for qx, qy in placed):
            dy -= 14
        placed.append((px, py + dy))
        ax.annotate(text, (x, y), fontsize=8, xytext=(10, dy), textcoords="offset points", zorder=4)


def plot_pareto(c: Comparison, path: Path) -> Path | None:
    """PNG: latency (x) vs accuracy (y) per target, marker area ~ model size, the Pareto front joined."""
    from edgeq.extras import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401 - log-axis labels as plain numbers

    targets = [t for t in c.targets if pareto_front(c, t)]
    if not targets:
        return None
    fig, axes = plt.subplots(1, len(targets), figsize=(6.0 * len(targets), 4.6), squeeze=False)
    biggest = max(v.size_bytes for v in c.variants) or 1
    metric = next((v.accuracy.metric for v in c.variants if v.accuracy), "top1")
    for ax, t in zip(axes[0], targets):
        pts = [(v, latency_ms(v.latency.get(t))) for v in c.variants]
        pts = [(v, lat) for v, lat in pts if lat is not None and v.accuracy is not None]
        front = set(pareto_front(c, t))
        for v, lat in pts:
            on = v.name in front
            ax.scatter(lat, v.accuracy.value, s=60 + 1400 * v.size_bytes / biggest, alpha=0.55,
                       color="tab:blue" if on else "tab:gray", edgecolors="black", linewidths=0.6, zorder=3)
        fp = sorted((lat, v.accuracy.value) for v, lat in pts if v.name in front)
        if len(fp) > 1:
            ax.plot([p[0] for p in fp], [p[1] for p in fp], "--", color="tab:blue", lw=1, zorder=2,
                    label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        lats = [lat for _, lat in pts]
        accs = [v.accuracy.value for v, _ in pts]
        span = (max(accs) - min(accs)) or 1.0
        ax.set_ylim(min(accs) - 0.25 * span, max(accs) + 0.35 * span)
        if max(lats) > 10 * min(lats):  # int16x8 reference kernels can be 50x slower: keep the rest readable
            ax.set_xscale("log")
            ax.set_xlim(min(lats) / 1.6, max(lats) * 4)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        else:
            ax.set_xlim(0, max(lats) * 1.35)
        _label(ax, [(f"{v.name}  {v.size_bytes / 1024:.0f} KB", lat, v.accuracy.value) for v, lat in pts])
        ax.set_xlabel(f"latency p50 on {t} (ms)  - lower is better")
        ax.set_ylabel(f"accuracy, {metric} (%)  - higher is better")
        if c.emulated(t):  # never let an emulator's panel pass for a device's
            ax.set_title(f"{t}: EMULATED, latency is not a device speed", fontsize=10, color="tab:red")
        else:
            ax.set_title(f"{t}: marker area ~ model size", fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    from edgeq.fileio import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())
