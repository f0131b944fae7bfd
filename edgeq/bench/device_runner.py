#!/usr/bin/env python3
"""edgeq's device-side runner: copied to a Linux board (Raspberry Pi ...) and run there by ``edgeq bench``.

ONE self-contained file on purpose: Python >= 3.9, numpy, and ai-edge-litert or tflite-runtime (whichever
the board has) - nothing from edgeq. It times one model, records the board (device-tree model, CPU, governor),
samples CPU temperature and frequency during the run, and prints one JSON line prefixed with
``EDGEQ_DEVICE_RESULT``. ``--outputs FILE.npz`` also saves the outputs for ``--check-outputs``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import sys
import threading
import time

MARK = "EDGEQ_DEVICE_RESULT "


def _read(path: str) -> str | None:
    try:
        with open(path, errors="replace") as f:
            return f.read().replace("\x00", "").strip()
    except OSError:
        return None


def board_facts() -> dict:
    """What the board is. Missing files give "unknown", never a guess."""
    facts = {"board": _read("/proc/device-tree/model") or "unknown", "machine": platform.machine(),
             "system": platform.system() + " " + platform.release(), "python": platform.python_version(),
             "cpu_count": str(os.cpu_count())}
    cpuinfo = _read("/proc/cpuinfo") or ""
    keys = {}
    for line in cpuinfo.splitlines():
        k, _, v = line.partition(":")
        keys.setdefault(k.strip(), v.strip())
    parts = sorted({ln.split(":")[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("CPU part")})
    facts["cpu"] = keys.get("Model") or keys.get("Hardware") or keys.get("model name") or "unknown"
    if parts:
        facts["cpu_parts"] = ",".join(parts)  # 0xd08 = Cortex-A72 (Pi 4), 0xd0b = Cortex-A76 (Pi 5)
    facts["governor"] = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "unknown"
    mx = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    facts["max_freq_mhz"] = str(int(mx) // 1000) if mx and mx.isdigit() else "unknown"
    osr = _read("/etc/os-release") or ""
    for line in osr.splitlines():
        if line.startswith("PRETTY_NAME="):
            facts["os"] = line.split("=", 1)[1].strip('"')
    return facts


def cpu_temp_c() -> float | None:
    zones = sorted(glob.glob("/sys/class/thermal/thermal_zone*"))
    for z in zones:  # prefer the CPU zone; else the first readable one
        if "cpu" in (_read(z + "/type") or "").lower():
            zones = [z] + zones
            break
    for z in zones:
        t = _read(z + "/temp")
        if t and t.lstrip("-").isdigit():
            return int(t) / 1000.0
    return None


def cpu_freqs_mhz() -> list[float]:
    out = []
    for p in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        v = _read(p)
        if v and v.isdigit():
            out.append(int(v) / 1000.0)
    return out


class Monitor(threading.Thread):
    """Samples temperature and frequency every 0.5 s while the model runs."""

    def __init__(self):
        super().__init__(daemon=True)
        self.temps, self.freqs, self.stop = [], [], threading.Event()

    def sample(self):
        t = cpu_temp_c()
        if t is not None:
            self.temps.append(t)
        f = cpu_freqs_mhz()
        if f:
            self.freqs.append(min(f))

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.5)


def throttled() -> str | None:
    """Raspberry Pi firmware's throttling flags (vcgencmd), when the tool is there."""
    import subprocess

    try:
        out = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().split("=", 1)[-1] if "=" in out else None


def load_runtime():
    try:
        from ai_edge_litert import interpreter as lr
        from importlib.metadata import version
        return lr, "ai-edge-litert " + version("ai-edge-litert")
    except ImportError:
        import tflite_runtime.interpreter as lr  # the older runtime many boards still have
        return lr, "tflite-runtime " + getattr(lr, "__version__", "")


def delegation(ops: list, name: str) -> list:
    """Original nodes replaced by DELEGATE kernels (walking back from each kernel's outputs to its inputs)."""
    orig = [o for o in ops if o["op_name"] != "DELEGATE"]
    kernels = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): o["index"] for o in orig for t in o["outputs"]}
    by_index = {o["index"]: o for o in orig}
    taken = set()
    for k in kernels:
        stop, todo, seen = {int(t) for t in k["inputs"]}, [int(t) for t in k["outputs"]], set()
        while todo:
            t = todo.pop()
            if t in seen or t in stop or t not in producer:
                continue
            seen.add(t)
            taken.add(producer[t])
            todo.extend(int(i) for i in by_index[producer[t]]["inputs"] if int(i) >= 0)
    left = sorted({o["op_name"] for o in orig if o["index"] not in taken})
    return [{"delegate": name, "nodes_delegated": len(taken), "nodes_total": len(orig),
             "partitions": len(kernels), "not_delegated": left}]


def run(a, threads: int, outputs: str | None) -> dict:
    import numpy as np

    res = {"device": board_facts(), "error": None, "threads": threads}
    mon = Monitor()
    mon.sample()
    res["temp_start_c"] = mon.temps[-1] if mon.temps else None
    try:
        lr, res["device"]["runtime"] = load_runtime()
        kw = {"model_path": a.model, "num_threads": threads}
        if a.no_xnnpack and hasattr(lr, "OpResolverType"):
            kw["experimental_op_resolver_type"] = lr.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        mon.start()
        t0 = time.perf_counter()
        it = lr.Interpreter(**kw)
        it.allocate_tensors()
        res["init_ms"] = (time.perf_counter() - t0) * 1e3
        try:
            ops = it._get_ops_details()  # noqa: SLF001 - the only way to see delegate coverage in Python
            if not a.no_xnnpack:
                res["delegation"] = delegation(ops, "TfLiteXNNPackDelegate")
        except Exception:  # noqa: BLE001 - older runtimes lack it; coverage is then unknown
            pass
        feeds = dict(np.load(a.inputs)) if a.inputs else {}
        rng = np.random.default_rng(0)
        for i, d in enumerate(it.get_input_details()):
            shape, dt = [int(s) for s in d["shape"]], np.dtype(d["dtype"])
            if ("in%d" % i) in feeds:
                x = feeds["in%d" % i].astype(dt).reshape(shape)
            elif dt.kind in "iu":
                x = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, size=shape, endpoint=True).astype(dt)
            else:
                x = rng.uniform(-1, 1, size=shape).astype(dt)
            it.set_tensor(d["index"], x)
        warm = []
        for _ in range(max(1, a.warmup)):
            t0 = time.perf_counter()
            it.invoke()
            warm.append((time.perf_counter() - t0) * 1e3)
        runs = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            it.invoke()
            runs.append((time.perf_counter() - t0) * 1e3)
        res.update(first_inference_ms=warm[0], warmup_ms=warm, runs_ms=runs)
        if outputs:
            np.savez(outputs, **{"out%d" % i: it.get_tensor(d["index"])
                                   for i, d in enumerate(it.get_output_details())})
    except Exception as exc:  # noqa: BLE001 - reported to the host as one line
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        res["error"] = "%s: %s" % (type(exc).__name__, msg)
    mon.stop.set()
    mon.sample()
    res["temps_c"], res["min_freqs_mhz"] = mon.temps, mon.freqs
    res["throttled"] = throttled()
    res["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model")
    p.add_argument("--threads", default="1", help="thread counts, comma-separated (one result line each)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--inputs", help=".npz with in0, in1 ... (else seeded random data)")
    p.add_argument("--outputs", help="save the outputs here (.npz with out0, out1 ...)")
    p.add_argument("--no-xnnpack", action="store_true")
    p.add_argument("--facts", action="store_true", help="only print the board facts")
    a = p.parse_args(argv)
    if a.facts:
        sys.stdout.write(MARK + json.dumps({"device": board_facts(), "temp_start_c": cpu_temp_c()}) + "\n")
        return 0
    for i, t in enumerate(int(x) for x in a.threads.split(",")):
        res = run(a, t, a.outputs if i == 0 else None)
        sys.stdout.write(MARK + json.dumps(res) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
