"""Read the text LiteRT's ``benchmark_model`` prints into a :class:`BenchResult`.

Pure function, no I/O: it takes the whole output (stdout+stderr, or ``adb logcat``) of one run. Handles the
three line prefixes (none, ``INFO: ``, Android logcat), the old and current summary lines, ``p5/median/p95``,
``(all same)`` statistics, delegate-coverage lines, memory lines and op-profiling tables. Unknown lines are
skipped; output without any timing raises :class:`BenchmarkFailed` with the tail of the text.
"""
from __future__ import annotations

import re

from edgeq.bench.errors import BenchmarkFailed
from edgeq.bench.result import BenchResult, DelegateCoverage, LatencyStats, OpProfileRow

_PREFIX = re.compile(
    r"^(?:\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEF]\s+[^:]*?\s*:\s?"  # logcat (threadtime)
    r"|[VDIWEF]/[^(:]*(?:\(\s*\d+\))?:\s?"  # logcat (brief): I/tflite  ( 8123): ...
    r"|(?:INFO|WARNING|ERROR|VERBOSE|DEBUG): ?)")
_ERROR_PREFIX = re.compile(r"^(?:ERROR:|\d\d-\d\d \d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[EF]\s|[EF]/)")
_STATS = re.compile(r"^count=(\d+)(.*)$")
_KV = re.compile(r"(\w+)=(-?[\d.]+(?:e[+-]?\d+)?)")
_PARAM = re.compile(r"^([A-Za-z#][^:\[]*?):\s*\[(.*)\]\s*$")
_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \(([^)]+)\) node"
                        r"(?:, yielding (\d+) partitions)?")
_INIT = re.compile(r"^Initialized session in ([\d.]+)\s*ms")
_SUMMARY_NEW = re.compile(r"^Inference timings in us: (.*)$")
_SUMMARY_OLD = re.compile(r"^Average inference timings in us: (.*)$")
_PEAK = re.compile(r"^Overall peak memory footprint \(MB\) via periodic monitoring: ([\d.]+)")
_FOOTPRINT = re.compile(r"^(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                        r"init=([\d.]+) overall=([\d.]+)")
_VM = re.compile(r"^[-+] (Vm\w+|Rss\w+(?: \+ \w+)*)\s*:\s*([\d.]+)\s*MB")
_SIZE = re.compile(r"^The input model file size \(MB\): ([\d.]+)")

_DELEGATE_FLAGS = {"Use gpu": "gpu", "Use nnapi": "nnapi", "Use hexagon": "hexagon", "Use xnnpack": "xnnpack",
                   "Use coreml": "coreml"}


def strip_prefix(line: str) -> str:
    """A line without its ``INFO: `` or logcat prefix (other lines unchanged, trailing whitespace dropped)."""
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1).rstrip()


def _stats(rest: str, count: int) -> LatencyStats:
    """``first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]`` or ``curr=V (all same)``, us."""
    kv = {k: float(v) / 1000.0 for k, v in _KV.findall(rest)}
    if "(all same)" in rest and "curr" in kv:
        v = kv["curr"]
        return LatencyStats(count=count, mean_ms=v, std_ms=0.0, min_ms=v, max_ms=v, p50_ms=v, p5_ms=v, p95_ms=v)
    return LatencyStats(count=count, mean_ms=kv.get("avg"), std_ms=kv.get("std"), min_ms=kv.get("min"),
                        max_ms=kv.get("max"), p50_ms=kv.get("median"), p5_ms=kv.get("p5"), p95_ms=kv.get("p95"))


def _summary(text: str) -> dict[str, float]:
    """``Init: 12345, First inference: 2345, ...`` -> {"init": ms, "first inference": ms, ...}."""
    out = {}
    for part in text.split(","):
        key, _, value = part.partition(":")
        try:
            out[key.strip().lower()] = float(value) / 1000.0
        except ValueError:
            continue
    return out


def _table_row(header: list[str], line: str) -> OpProfileRow | None:
    cells = [c.strip() for c in line.split("\t")]
    cells = cells[1:] if cells and cells[0] == "" else cells
    if len(cells) != len(header):
        return None
    row = dict(zip(header, cells))
    try:
        return OpProfileRow(
            node_type=row.get("node type", ""), name=row.get("name", ""),
            avg_ms=float(row["avg ms"]) if "avg ms" in row else None,
            percent=float(row["%"].rstrip("%")) if "%" in row else None,
            times_called=int(float(row["times called"])) if "times called" in row else None)
    except ValueError:
        return None


def parse_benchmark_output(text: str, *, target: str = "device", model: str | None = None) -> BenchResult:
    """Parse one ``benchmark_model`` run. Raises :class:`BenchmarkFailed` when it printed no timings."""
    result = BenchResult(model=model or "", target=target, tool="benchmark_model")
    phases: list[LatencyStats] = []
    firsts: list[float] = []
    summary: dict[str, float] = {}
    delegates_on: list[str] = []
    errors: list[str] = []
    in_regular_profile = False
    table: str | None = None  # current op-profiling table heading inside the regular-runs block
    header: list[str] | None = None
    raw = text.splitlines()
    lines = [strip_prefix(ln) for ln in raw]
    for original, line in zip(raw, lines):
        if not line:
            continue
        if _ERROR_PREFIX.match(original):
            errors.append(line)
            continue
        if m := _STATS.match(line):
            phases.append(_stats(m.group(2), int(m.group(1))))
            firsts.extend(float(v) / 1000.0 for k, v in _KV.findall(m.group(2))[:1] if k in ("first", "curr"))
        elif m := _REPLACING.search(line):
            result.delegation.append(DelegateCoverage(m.group(3), int(m.group(1)), int(m.group(2)),
                                                      int(m.group(4)) if m.group(4) else None))
        elif m := _INIT.match(line):
            result.init_ms = float(m.group(1))
        elif m := _SUMMARY_NEW.match(line) or _SUMMARY_OLD.match(line):
            summary = _summary(m.group(1))
        elif m := _PEAK.match(line):
            result.peak_memory_mb = float(m.group(1))
            result.device["peak_memory_source"] = "periodic monitoring (peak RSS)"
        elif m := _FOOTPRINT.match(line):
            result.device["memory_init_mb"], result.device["memory_overall_mb"] = m.group(1), m.group(2)
        elif m := _VM.match(line):
            result.device[f"end_{m.group(1).replace(' + ', '_')}_mb"] = m.group(2)
        elif m := _SIZE.match(line):
            result.device["model_size_mb"] = m.group(1)
        elif line.startswith("Operator-wise Profiling Info for Regular Benchmark Runs"):
            in_regular_profile, table, header = True, None, None
        elif line.startswith("Profiling Info for Benchmark Initialization"):
            in_regular_profile, table, header = False, None, None
        elif line.startswith("====="):
            table, header = line.strip("= "), None
        elif in_regular_profile and table == "Run Order" and line.lstrip().startswith("["):
            header = [c.strip().strip("[]").lower() for c in line.split("\t") if c.strip()]
        elif in_regular_profile and table == "Run Order" and header and "\t" in line:
            if row := _table_row(header, line):
                result.op_profile.append(row)
        elif line.startswith(("Segmentation fault", "Aborted", "terminate called", "Bus error")):
            errors.append(line)
        elif m := _PARAM.match(line):
            key, value = m.group(1).strip(), m.group(2).strip()
            if key == "Num threads" and value.lstrip("-").isdigit():
                result.threads = int(value)
            elif key == "Graph" and not model:
                result.model = value
            elif key == "External delegate path" and value:
                delegates_on.append(value)
            elif key in _DELEGATE_FLAGS and value in ("1", "true"):
                delegates_on.append(_DELEGATE_FLAGS[key])
    result.delegate = ",".join(delegates_on) or None

    warm = phases[0] if len(phases) >= 2 else None
    inference = phases[1] if len(phases) >= 2 else None
    if inference is None or inference.count == 0:
        avg = summary.get("inference (avg)", summary.get("inference", summary.get("no stats")))
        inference = LatencyStats(count=inference.count if inference else 0, mean_ms=avg) if avg else None
    if inference is None:
        raise BenchmarkFailed(_failure(result.model, errors, lines))
    result.inference = inference
    result.warmup = warm if warm is not None and warm.count > 0 else None
    result.init_ms = summary.get("init", result.init_ms)
    result.first_inference_ms = summary.get("first inference")
    if result.first_inference_ms is None and firsts:
        result.first_inference_ms = firsts[0]  # "first=" of the warmup phase is the first inference
    if result.peak_memory_mb is None and "memory_overall_mb" in result.device:
        result.peak_memory_mb = float(result.device["memory_overall_mb"])
        result.device["peak_memory_source"] = "footprint delta from the start of the tool (overall)"
    result.output_tail = "\n".join([ln for ln in lines if ln][-8:])
    return result


def _failure(model: str, errors: list[str], lines: list[str]) -> str:
    tail = " | ".join([ln for ln in lines if ln][-3:]) or "no output"
    # "Node number 3 (DEPTHWISE_CONV_2D) failed to prepare." says more than the kernel's own check line
    best = next((e for e in errors if "Node number" in e), errors[0] if errors else None)
    cause = f"{best}; " if best else ""
    return (f"benchmark_model run of {model or 'the model'} failed: no timing line ({cause}"
            f"output ends: {tail[:300]})")
