"""Text and Markdown views of benchmark results (the CLI prints them; files keep them)."""
from __future__ import annotations

from pathlib import Path

from edgeq.bench.result import BenchResult


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _coverage(r: BenchResult) -> str:
    if not r.delegation:
        return "none" if r.delegate in (None, "none") else "-"
    parts = []
    for d in r.delegation:
        mark = "" if d.fully_delegated else (" NONE" if d.nodes_delegated == 0 else " PARTIAL")
        parts.append(f"{d.nodes_delegated}/{d.nodes_total}{mark}")
    return ", ".join(parts)


COLUMNS = ("model", "thr", "init ms", "first ms", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms",
           "peak MB", "delegated")


def rows(results: list[BenchResult]) -> list[tuple[str, ...]]:
    out = []
    for r in results:
        if not r.ok:
            continue
        i = r.inference
        out.append((Path(r.model).name, str(r.threads or "-"), _ms(r.init_ms), _ms(r.first_inference_ms),
                    _ms(i.p50_ms), _ms(i.p90_ms), _ms(i.p99_ms), _ms(i.mean_ms), _ms(i.std_ms), _ms(i.min_ms),
                    f"{r.peak_memory_mb:.1f}" if r.peak_memory_mb is not None else "-", _coverage(r)))
    return out


def warnings(results: list[BenchResult]) -> list[str]:
    """One line per partly (or not at all) delegated model: the most common silent slowdown."""
    seen, out = set(), []
    for r in results:
        for d in r.partially_delegated if r.ok else []:
            line = f"{Path(r.model).name}: only {d.describe()}"
            if line not in seen:
                seen.add(line)
                out.append(line)
    return out


def emulated_notes(results: list[BenchResult]) -> list[str]:
    """One line per emulated target: its numbers must never stand beside a device's."""
    seen: dict[str, str] = {}
    for r in results:
        if r.emulated:
            seen.setdefault(r.target, r.emulated)
    return [f"EMULATED target {t}: {why}; its latency is not a device speed" for t, why in seen.items()]


def render_text(results: list[BenchResult]) -> str:
    """A fixed-width table, then the partial-delegation warnings, prominently."""
    table = [COLUMNS, *rows(results)]
    widths = [max(len(row[c]) for row in table) for c in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    ok = [r for r in results if r.ok]
    if ok:
        r = ok[0]
        lines.append(f"({ok[0].inference.count} timed runs each after {r.warmup.count if r.warmup else 0} warmup; "
                     f"target {r.target}, {r.tool}, {r.device.get('runtime', '')}; peak MB = peak RSS of the "
                     "benchmark process)")
    for w in warnings(results):
        lines.append(f"WARNING partial delegation: {w}")
    lines += emulated_notes(results)
    return "\n".join(lines)


def render_markdown(results: list[BenchResult]) -> str:
    table = [COLUMNS, *rows(results)]
    md = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(r) + " |" for r in table[1:]]
    md += [f"\n**Partial delegation:** {w}" for w in warnings(results)]
    md += [f"\n**Failed:** {r.error}" for r in results if not r.ok]
    md += [f"\n**{n}**" for n in emulated_notes(results)]
    return "\n".join(md) + "\n"
