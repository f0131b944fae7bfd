#!/usr/bin/env python3
"""STAND-IN for LiteRT's ``benchmark_model`` on the device lab's phone (no real binary can be had here).

It is NOT Google's tool. It takes benchmark_model's flags, really runs the model with the aarch64 ai-edge-litert
inside the phone stand-in (XNNPACK or builtin kernels, the requested threads, warmup and timed runs), and
prints its results in benchmark_model's output format (``INFO:`` prefix, 2023+ builds), so that edgeq's whole
adb path - push, taskset, flags, parsing, cleanup - runs for real. What it cannot do honestly it says:
per-op times do not exist in the Python API, so with ``--enable_op_profiling`` the table lists the nodes that
really ran (delegate kernels and CPU ops) with the run's average split evenly between them, and a line saying
so. Which nodes a delegate took is read from what the runtime did (``_delegated``), not from edgeq's graph walk,
so a test comparing the two is not comparing edgeq with itself. ``--use_gpu``/``--use_nnapi``/``--use_hexagon`` fail like a phone without that hardware.
Runs with Python >= 3.9 and needs only numpy + ai-edge-litert.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time


def log(msg: str) -> None:
    print("INFO: " + msg, flush=True)


def flags(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
        elif a.startswith("--"):
            out[a[2:]] = "true"
    return out


def stats_line(xs_us: list[float]) -> str:
    if len(set(xs_us)) == 1:
        return "count=%d curr=%d (all same)" % (len(xs_us), xs_us[0])
    s = sorted(xs_us)
    q = lambda p: s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]  # noqa: E731
    return ("count=%d first=%d curr=%d min=%d max=%d avg=%.1f std=%d p5=%d median=%d p95=%d"
            % (len(xs_us), xs_us[0], xs_us[-1], s[0], s[-1], statistics.mean(xs_us), statistics.pstdev(xs_us),
               q(5), q(50), q(95)))


def main(argv: list[str]) -> int:
    f = flags(argv)
    graph = f.get("graph")
    threads = int(f.get("num_threads", "-1"))
    truthy = lambda k: f.get(k, "false") in ("1", "true")  # noqa: E731
    log("STARTING!")
    log("(edgeq device-lab STAND-IN for benchmark_model: runs the model with ai-edge-litert)")
    log("Log parameter values verbosely: [0]")
    log("Num threads: [%d]" % threads)
    log("Graph: [%s]" % graph)
    if truthy("enable_op_profiling"):
        log("Enable op profiling: [1]")
    for flag, name in (("use_gpu", "Use gpu"), ("use_nnapi", "Use NNAPI"), ("use_hexagon", "Use Hexagon")):
        if truthy(flag):
            log("%s: [1]" % name)
            print("ERROR: %s delegate: this phone stand-in has no such hardware." % name.split()[1], flush=True)
            print("ERROR: Failed to apply the delegate; benchmark aborted.", flush=True)
            return 1
    if f.get("external_delegate_path"):
        log("External delegate path: [%s]" % f["external_delegate_path"])
    if not graph or not os.path.isfile(graph):
        print("ERROR: Please specify the name of your TF Lite input file with --graph" if not graph else
              "ERROR: Could not open '%s'." % graph, flush=True)
        return 1
    import numpy as np
    from ai_edge_litert import interpreter as lr

    use_xnnpack = f.get("use_xnnpack", "true") in ("1", "true")
    kw = {"model_path": graph, "num_threads": None if threads < 1 else threads}
    if not use_xnnpack:
        kw["experimental_op_resolver_type"] = lr.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if f.get("external_delegate_path"):
        opts = dict(kv.split(":", 1) for kv in f.get("external_delegate_options", "").split(";") if ":" in kv)
        try:
            kw["experimental_delegates"] = [lr.load_delegate(f["external_delegate_path"], opts)]
        except Exception as exc:  # noqa: BLE001 - reported like the real tool: an ERROR line, exit 1
            print("ERROR: Failed to load external delegate: %s" % str(exc).splitlines()[0], flush=True)
            return 1
    log("Loaded model %s" % graph)
    t0 = time.perf_counter()
    try:
        it = lr.Interpreter(**kw)
        it.allocate_tensors()
    except Exception as exc:  # noqa: BLE001
        print("ERROR: %s" % (str(exc).strip().splitlines() or ["Failed to allocate tensors"])[0], flush=True)
        print("ERROR: Failed to initialize the interpreter", flush=True)
        return 1
    init_us = (time.perf_counter() - t0) * 1e6
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        dt = np.dtype(d["dtype"])
        x = (rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, size=d["shape"], endpoint=True)
             if dt.kind in "iu" else rng.uniform(-1, 1, size=d["shape"]))
        it.set_tensor(d["index"], x.astype(dt))
    it.invoke()  # untimed: tensors the CPU kernels wrote now hold data, those inside a delegate never get any
    ops = it._get_ops_details()  # noqa: SLF001
    kernels = [o for o in ops if o["op_name"] == "DELEGATE"]
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    if use_xnnpack:
        log("Created TensorFlow Lite XNNPACK delegate for CPU.")
    if kernels:
        taken = _delegated(it, originals, kernels)
        log("Replacing %d out of %d node(s) with delegate (TfLiteXNNPackDelegate) node, yielding %d partitions "
            "for the whole graph." % (len(taken), len(originals), len(kernels)))
    log("The input model file size (MB): %.6f" % (os.path.getsize(graph) / 1e6))
    log("Initialized session in %.3fms." % (init_us / 1e3))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    phases = []
    for label, n in (("warmup", int(f.get("warmup_runs", "1"))), ("regular", int(f.get("num_runs", "50")))):
        log("Running benchmark for at least %d iterations and at least 0 seconds but terminate if exceeding "
            "150 seconds." % n)
        xs = []
        for _ in range(max(1, n)):
            t0 = time.perf_counter()
            it.invoke()
            xs.append((time.perf_counter() - t0) * 1e6)
        log(stats_line(xs))
        phases.append(xs)
    warm, reg = phases
    log("Inference timings in us: Init: %d, First inference: %d, Warmup (avg): %.1f, Inference (avg): %.1f"
        % (init_us, warm[0], statistics.mean(warm), statistics.mean(reg)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    log("Memory footprint delta from the start of the tool (MB): init=%.3f overall=%.3f" % (rss0, peak))
    if truthy("report_peak_memory_footprint"):
        log("Overall peak memory footprint (MB) via periodic monitoring: %.3f" % peak)
    if truthy("enable_op_profiling"):
        _op_profile(it, ops, kernels, statistics.mean(reg) / 1e3)
    return 0


def _has_buffer(it, tensor: int) -> bool:
    try:
        it.get_tensor(tensor)
        return True
    except ValueError:  # "Tensor data is null": the arena never gave it memory, a delegate keeps it inside
        return False


def _delegated(it, originals: list, kernels: list) -> set:
    """Indices of the nodes a delegate ran, from what the runtime did after one invoke(): a node ran inside a
    delegate when the arena gave its outputs no memory (the delegate holds them), or when its output is one the
    DELEGATE node itself produces (a partition's last node). Nodes on the CPU wrote arena tensors."""
    produced = {int(t) for k in kernels for t in k["outputs"]}
    return {o["index"] for o in originals
            if any(int(t) in produced for t in o["outputs"]) or not any(_has_buffer(it, int(t)) for t in o["outputs"])}


def _op_profile(it, ops, kernels, avg_ms: float) -> None:
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    taken = _delegated(it, originals, kernels)
    ran = kernels + [o for o in originals if o["index"] not in taken]
    share = avg_ms / max(1, len(ran))
    print("Operator-wise Profiling Info for Regular Benchmark Runs:", flush=True)
    print("============================== Run Order ==============================")
    print("\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]")
    cdf = 0.0
    for o in ran:
        name = "TfLiteXNNPackDelegate" if o["op_name"] == "DELEGATE" else o["op_name"]
        pct = 100.0 / len(ran)
        cdf += pct
        print("\t%s\t%.3f\t%.3f\t%.3f%%\t%.3f%%\t0.000\t1\t[%s]:%d" % (name, share, share, pct, cdf,
                                                                     o.get("op_name"), o["index"]))
    print("(stand-in: per-op times are the run's average split evenly; the node list is the real one)", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
