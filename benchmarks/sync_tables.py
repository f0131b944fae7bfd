"""Copy the tables and example outputs each benchmark wrote into README.md and docs/*.md, so a rerun of
`make bench` refreshes them.

Docs quote a benchmark's table verbatim (its ``"markdown"`` in ``benchmarks/results/bench_*.json``). A table
in a document is refreshed when its header line and at least half of its row keys (first cells) match one
table of one results file; it is replaced by that table, whole. A recorded command (any ``{"command",
"output"}`` in a results file) quoted in a code block as ``$ COMMAND`` gets the recorded output after it.
Prose numbers around them are not touched: ``python -m benchmarks.check_numbers`` lists the ones a rerun
made wrong.

``python -m benchmarks.sync_tables [--check]``: rewrite the documents (atomically), or only say which tables
differ (exit 1 when any does).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from edgeq.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Table:
    source: str  # results file stem
    lines: tuple[str, ...]  # header, separator, rows

    @property
    def keys(self) -> set[str]:
        return {row.split("|")[1].strip() for row in self.lines[2:] if row.count("|") > 2}


def tables(text: str, source: str = "") -> list[tuple[int, Table]]:
    """Each markdown table in ``text`` (a run of lines starting with '|', with a separator second) and where it
    starts (line index)."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            found.append((i, Table(source, tuple(lines[i:j]))))
            i = j
        else:
            i += 1
    return found


def result_tables() -> list[Table]:
    out = []
    for path in sorted(RESULTS.glob("bench_*.json")):
        out += [t for _, t in tables(json.loads(path.read_text()).get("markdown", ""), path.stem)]
    return out


def recorded_outputs() -> dict[str, tuple[str, str]]:
    """command -> (results file stem, output) for every command a benchmark recorded with its output."""
    found: dict[str, tuple[str, str]] = {}

    def walk(o, stem: str) -> None:
        if isinstance(o, dict):
            if isinstance(o.get("command"), str) and isinstance(o.get("output"), str):
                found[o["command"].strip()] = (stem, o["output"].rstrip("\n"))
            for v in o.values():
                walk(v, stem)
        elif isinstance(o, list):
            for v in o:
                walk(v, stem)

    for path in sorted(RESULTS.glob("bench_*.json")):
        walk(json.loads(path.read_text()), path.stem)
    return found


def refresh_outputs(lines: list[str], outputs: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Replace what follows each ``$ COMMAND`` line of a recorded command, up to the closing fence: the new
    lines, and "LINE: output of ... from SOURCE" for each output that changed."""
    out, i, changed = [], 0, []
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        rec = outputs.get(line[2:].strip()) if line.startswith("$ ") else None
        if rec is None:
            continue
        end = i
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if lines[i:end] != rec[1].splitlines():
            changed.append(f"{i}: output of `{line[2:60].strip()}...` from {rec[0]}")
        out += rec[1].splitlines()
        i = end
    return out, changed


def match(table: Table, candidates: list[Table]) -> Table | None:
    """The results table ``table`` is a copy of: same header, and most of its row keys."""
    best, best_shared = None, 0
    for c in candidates:
        if c.lines[0] != table.lines[0]:
            continue
        shared = len(table.keys & c.keys)
        if shared > best_shared:
            best, best_shared = c, shared
    return best if best is not None and 2 * best_shared >= max(len(table.keys), 1) else None


def sync(path: Path, candidates: list[Table], outputs: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Refresh the tables and recorded outputs of one document; returns a line for each that changed."""
    text = path.read_text()
    lines = text.splitlines()
    changed = []
    if outputs:
        lines, found = refresh_outputs(lines, outputs)
        changed += [f"{path.relative_to(ROOT)}:{c}" for c in found]
    for start, table in reversed(tables("\n".join(lines))):  # from the end: earlier line indexes stay valid
        new = match(table, candidates)
        if new is not None and new.lines != table.lines:
            lines[start:start + len(table.lines)] = new.lines
            changed.append(f"{path.relative_to(ROOT)}:{start + 1}: table from {new.source}")
    new_text = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    if new_text != text:
        atomic_write_text(path, new_text)
    return changed


def main(argv: list[str]) -> int:
    candidates, outputs = result_tables(), recorded_outputs()
    if argv == ["--check"]:
        stale = [f"{p.relative_to(ROOT)}:{s + 1}: differs from {m.source}"
                 for p in DOCS for s, t in tables(p.read_text())
                 if (m := match(t, candidates)) is not None and m.lines != t.lines]
        for p in DOCS:
            stale += [f"{p.relative_to(ROOT)}:{c}" for c in refresh_outputs(p.read_text().splitlines(), outputs)[1]]
        print("\n".join(stale) or "every table and recorded output matches its results")
        return 1 if stale else 0
    changed = [c for p in DOCS for c in sync(p, candidates, outputs)]
    print("\n".join(changed) or "every table already matches its results")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
