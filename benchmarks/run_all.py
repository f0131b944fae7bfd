"""Run every ``benchmarks/bench_*.py`` and collect their results.

Each bench module has ``run(work: Path) -> dict`` returning JSON-able results with a ``"markdown"`` key
(a short section for RESULTS.md). Results land in ``benchmarks/results/<name>.json`` and
``benchmarks/results/RESULTS.md`` (what README quotes). ``python -m benchmarks.run_all NAME ...`` runs
only the named ones; ``--summary`` only rewrites RESULTS.md from the JSON files.
"""
from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks import provenance

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "work"


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def write_summary() -> None:
    """RESULTS.md from every committed results/bench_*.json (what README quotes)."""
    sections = []
    for path in sorted(RESULTS.glob("bench_*.json")):
        data = json.loads(path.read_text())
        meta = data.get("_meta", {})
        versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
        sections.append(f"{data.get('markdown', '').rstrip()}\n\n_{path.stem}: {meta.get('date')}, "
                        f"{meta.get('machine')}, {meta.get('seconds')} s, commit {str(meta.get('commit'))[:10]}; "
                        f"{versions}_\n")
    (RESULTS / "RESULTS.md").write_text("# Benchmark results (written by `make bench`)\n\n" + "\n".join(sections))


def main(argv: list[str]) -> int:
    if argv == ["--summary"]:
        write_summary()
        return 0
    names = argv or discover()
    RESULTS.mkdir(exist_ok=True)
    failed = []
    for name in names:
        name = name if name.startswith("bench_") else f"bench_{name}"
        print(f"== {name}", flush=True)
        t = time.time()
        stamp = provenance.stamp(name)  # before the run: the code it runs, even if files change meanwhile
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            work = WORK / name
            work.mkdir(parents=True, exist_ok=True)
            result = module.run(work)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        # commit, package versions and a hash of every file the numbers depend on (tests check it)
        result["_meta"] = {"seconds": round(time.time() - t, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
                           "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                                      f"{os.cpu_count()} cores, Python {platform.python_version()}",
                           **stamp}
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(result.get("markdown", ""), flush=True)
    write_summary()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
