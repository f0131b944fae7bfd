"""reference.toml: the zoo's expected results with tolerances (cf. NNCF's ptq_reference_data.yaml).

Per model and mode: ``status = "ok"`` with ``metric`` (the family's primary number) and ``tolerance``, or
``status = "expected_failure"`` (today's finding; converting it later is progress, reported, not a failure).
A regression: a metric below reference - tolerance, or an "ok" entry that no longer converts.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

REFERENCE = Path(__file__).with_name("reference.toml")
DEFAULT_TOLERANCE = {"fp32": 0.02, "fp16": 0.03, "dynamic": 0.05, "int8": 0.08, "int16x8": 0.05, "onnx2tf": 0.02,
                     "int8_per_tensor": 0.1}


@dataclass(frozen=True)
class Expected:
    status: str  # "ok" | "expected_failure"
    metric: float | None = None
    tolerance: float = 0.0
    note: str = ""


def load(path: Path = REFERENCE) -> dict[tuple[str, str], Expected]:
    if not path.exists():
        return {}
    raw = tomllib.loads(path.read_text())
    out = {}
    for model, modes in raw.items():
        for mode, e in modes.items():
            out[(model, mode)] = Expected(e["status"], e.get("metric"), e.get("tolerance", 0.0), e.get("note", ""))
    return out


def primary_value(result: dict) -> float | None:
    m = result.get("metrics") or {}
    return m.get(result.get("primary", ""))


def check(results: list[dict], ref: dict[tuple[str, str], Expected]) -> tuple[list[str], list[str]]:
    """(regressions, improvements) as one line each."""
    bad, good = [], []
    for r in results:
        e = ref.get((r["model"], r["mode"]))
        if e is None:
            continue
        ok = r["status"] == "ok"
        key = f"{r['model']} {r['mode']}"
        if e.status == "ok" and not ok:
            bad.append(f"{key}: converted before, now fails: {r.get('error', r['status'])}")
        elif e.status == "ok" and e.metric is not None:
            v = primary_value(r)
            if v is None or v < e.metric - e.tolerance:
                bad.append(f"{key}: {r.get('primary')} {v} < reference {e.metric} - {e.tolerance}")
        elif e.status == "expected_failure" and ok:
            good.append(f"{key}: expected failure now converts ({r.get('primary')} {primary_value(r)})")
    return bad, good


def render(results: list[dict]) -> str:
    """reference.toml text recording ``results`` as today's references (round down, tolerances by mode)."""
    by_model: dict[str, list[dict]] = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    lines = ["# Zoo reference results (make zoo fails on a regression against these). Regenerate after a deliberate",
             "# change with: python -m benchmarks.zoo.reference benchmarks/results/zoo.json (say why in the commit).",
             "# Tolerances by mode; cosine metrics get a tenth of it (a cosine of 0.98 is already a broken encoder).", ""]
    for model, rs in by_model.items():
        lines.append(f"[{model}]")
        for r in rs:
            if r["status"] == "n/a":
                continue
            if r["status"] == "ok":
                v = primary_value(r)
                tol = DEFAULT_TOLERANCE.get(r["mode"], 0.05)
                if "cosine" in str(r.get("primary")):
                    tol = round(tol / 10, 4)
                metric = "" if v is None else f", metric = {int(v * 10000) / 10000:.4f}, tolerance = {tol}"
                lines.append(f'{r["mode"]} = {{ status = "ok"{metric} }}  # {r.get("primary")}')
            else:
                note = (r.get("error") or r["status"]).replace('"', "'").replace("\\", "/")[:200]
                lines.append(f'{r["mode"]} = {{ status = "expected_failure", note = "{note}" }}')
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.zoo.reference RESULTS.json [MORE.json ...]``: record runs (possibly partial) as
    reference.toml; an item in several files takes the first file's result."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    seen: dict[tuple[str, str], dict] = {}
    for path in args:
        for r in json.loads(Path(path).read_text())["results"]:
            seen.setdefault((r["model"], r["mode"]), r)
    results = sorted(seen.values(), key=lambda r: (r["model"], r["mode"]))
    REFERENCE.write_text(render(results))
    print(f"wrote {REFERENCE} from {len(results)} results in {', '.join(args)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
