"""Benchmarks on devices: ``adb[:SERIAL]`` (Android) and ``ssh://[user@]host[:port]`` (Linux boards).

``run_target`` never raises for a device fault: a device that is missing, unauthorized, drops mid-run or
times out gives results with ``error`` set (one line naming the target and the reason), so that with several
targets the others' results are kept. ``run_targets`` runs several targets in parallel threads; Ctrl-C stops
them, and each removes its run folder on the device before the interrupt goes on.
"""
from __future__ import annotations

import re
import shlex
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from edgeq.bench import emulation
from edgeq.bench.device_flow import (RUNNER, FlowOptions, RunFolder, install_binary, linux_facts, push_models,
                                     run_benchmark_model, run_python_runner, shell_conditions)
from edgeq.bench.errors import BenchmarkFailed, TargetError
from edgeq.bench.result import BenchResult
from edgeq.errors import EdgeqError, ModelLoadError
from edgeq.tflite.verify import verify_tflite
from edgeq.transport.adb import AdbRemote
from edgeq.transport.base import CANCEL, Cancelled, Remote
from edgeq.transport.errors import DeviceError
from edgeq.transport.ssh import SshOptions, SshRemote, parse_ssh_target

ANDROID_PROPS = {"model": "ro.product.model", "manufacturer": "ro.product.manufacturer",
                 "soc": "ro.soc.model", "platform": "ro.board.platform", "abi": "ro.product.cpu.abi",
                 "sdk": "ro.build.version.sdk", "android": "ro.build.version.release"}


@dataclass(frozen=True)
class DeviceBenchOptions:
    """Everything a device run needs beyond the models (the CLI fills it from flags and target profiles)."""

    threads: tuple[int, ...] = (1,)
    runs: int = 10
    warmup: int = 1
    benchmark_binary: str | None = None
    binary_required: bool = True  # False: a profile's default path, skipped when missing on an ssh board
    delegate: str = "xnnpack"  # none | xnnpack | gpu | nnapi | hexagon | external:/path/on/device/lib.so
    delegate_explicit: bool = False  # given on the command line: wins over a target profile's delegate
    delegate_options: dict[str, str] = field(default_factory=dict)
    cores: str = "all"  # all | big | hex mask for taskset (Android)
    big_core_mask: str | None = None  # from a target profile, used when the device does not tell
    op_profile: bool = False
    check_outputs: bool = False
    ssh: SshOptions = field(default_factory=SshOptions)
    work_dir: str | None = None  # where the run folder is made (default /data/local/tmp or /tmp)
    timeout_s: float = 600.0
    emulated: str | None = None  # a target profile that says so; else detected on the device



def is_device_target(spec: str) -> bool:
    return spec == "adb" or spec.startswith("adb:") or spec.startswith("ssh://")


def open_remote(spec: str, ssh: SshOptions, timeout_s: float | None = None) -> Remote:
    """The transport for ``spec``; connecting waits at most 10 s, or ``timeout_s`` when that is shorter."""
    connect = max(1, int(min(ssh.connect_timeout, timeout_s or ssh.connect_timeout)))
    if spec == "adb" or spec.startswith("adb:"):
        serial = spec[4:] or None
        return AdbRemote(serial, connect_timeout=connect)
    if spec.startswith("ssh://"):
        return SshRemote(parse_ssh_target(spec), replace(ssh, connect_timeout=connect))
    raise TargetError(f"target '{spec}': give adb[:SERIAL] or ssh://[user@]host[:port]")


def android_facts(remote: Remote) -> dict[str, str]:
    script = "; ".join(f'echo "{k}=$(getprop {p})"' for k, p in ANDROID_PROPS.items())
    out = remote.run(script + "; echo \"cores=$(cat /sys/devices/system/cpu/possible 2>/dev/null)\"", timeout=60).out
    facts = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        if k in ANDROID_PROPS or k == "cores":
            facts[k] = v.strip() or "unknown"
    return facts


def big_core_mask(remote: Remote) -> str | None:
    """Hex mask of the cores with the highest max frequency, when the device tells (None: it does not)."""
    out = remote.run("for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/cpuinfo_max_freq; do "
                     "[ -r \"$f\" ] && echo \"$f $(cat \"$f\")\"; done; true", timeout=60).out
    freqs = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"cpu(\d+)/cpufreq/\S+ (\d+)", out)}
    if not freqs or len(set(freqs.values())) < 2:
        return None
    top = max(freqs.values())
    return format(sum(1 << c for c, f in freqs.items() if f == top), "x")


def _cpu_mask(remote: Remote, o: DeviceBenchOptions, facts: dict[str, str]) -> str | None:
    if o.cores == "all":
        return None
    if o.cores != "big":
        return o.cores
    mask = big_core_mask(remote) or o.big_core_mask
    if mask is None:
        facts["cores_note"] = "big cores unknown (no cpufreq data): ran on all cores"
    return mask


def _python_ok(remote: Remote) -> bool:
    probe = ("python3 -c 'import numpy; exec(\"try:\\n import ai_edge_litert\\nexcept ImportError:\\n "
             "import tflite_runtime\")'")
    return remote.run(probe + " >/dev/null 2>&1", timeout=120, check=False).code == 0


def run_target(target_spec: str, models: list[Path], options: DeviceBenchOptions,
               label: str | None = None) -> list[BenchResult]:
    """Benchmark every model at every thread count on one device; faults become results with ``error``."""
    label = label or target_spec
    models = [Path(m) for m in models]
    try:
        remote = open_remote(target_spec, options.ssh, options.timeout_s)
    except EdgeqError as exc:
        return _failed(models, options, label, str(exc))
    done: list[BenchResult] = []
    try:
        _run(remote, models, options, label, done)
        return done
    except Cancelled:
        raise
    except (DeviceError, BenchmarkFailed) as exc:  # keep what finished before the fault
        return done + _failed([m for m in models if str(m) not in {r.model for r in done}], options, label, str(exc))
    finally:
        remote.close()


def _failed(models: list[Path], o: DeviceBenchOptions, label: str, error: str) -> list[BenchResult]:
    return [BenchResult(model=str(m), target=label, threads=t, delegate=o.delegate, error=error)
            for m in models for t in o.threads]


def _verified(models: list[Path], o: DeviceBenchOptions, label: str, results: list[BenchResult]) -> list[Path]:
    """The models that are sound .tflite files; each other one becomes a failed result naming the file."""
    good = []
    for m in models:
        try:
            verify_tflite(m)
            good.append(m)
        except ModelLoadError as exc:
            results += _failed([m], o, label, str(exc))
    return good


def _run(remote: Remote, models: list[Path], o: DeviceBenchOptions, label: str, results: list[BenchResult]) -> None:
    remote.connect()
    models = _verified(models, o, label, results)  # before anything is copied to the device
    if not models:
        return
    android = isinstance(remote, AdbRemote)
    facts = android_facts(remote) if android else {}
    emulated = o.emulated or emulation.detect(remote)
    base = o.work_dir or ("/data/local/tmp" if android else "/tmp")
    flow = FlowOptions(threads=o.threads, runs=o.runs, warmup=o.warmup, delegate=o.delegate,
                       delegate_options=o.delegate_options, op_profile=o.op_profile, timeout_s=o.timeout_s)
    if o.op_profile and not o.benchmark_binary:
        raise BenchmarkFailed(f"{label}: --op-profile needs --benchmark-binary (LiteRT's benchmark_model; the "
                              "Python interpreter API has no per-op profiler)")
    if not o.benchmark_binary and o.delegate not in ("xnnpack", "none"):
        raise BenchmarkFailed(f"{label}: --delegate {o.delegate} needs --benchmark-binary (edgeq's Python runner "
                              "runs XNNPACK or the builtin CPU kernels only)")
    if android and not o.benchmark_binary:
        raise BenchmarkFailed(f"{label}: Android runs need --benchmark-binary PATH (LiteRT's benchmark_model "
                              "for android_arm64, or its path on the phone)")
    if not android and o.work_dir:
        remote.run(f"mkdir -p {shlex.quote(o.work_dir)}", timeout=60)
    with RunFolder(remote, base) as folder, tempfile.TemporaryDirectory(prefix="edgeq-check-") as tmp:
        flow = replace(flow, cpu_mask=_cpu_mask(remote, o, facts))
        graphs = push_models(remote, folder, models, o.timeout_s)
        binary = _binary(remote, folder, o, label)
        need_runner = binary is None or o.check_outputs
        if need_runner and (not android or _python_ok(remote)):
            remote.push(RUNNER, folder.file("edgeq_runner.py"), timeout=o.timeout_s)
        elif need_runner:
            facts["check_outputs"] = "not possible: no python3 with ai-edge-litert on this device " \
                                     "(benchmark_model cannot save outputs)"
        for i, (model, graph) in enumerate(zip(models, graphs)):
            if binary:
                before = {} if android else linux_facts(remote)
                rs = [run_benchmark_model(remote, binary, graph, model, t, flow, label) for t in o.threads]
                if not android:
                    board = shell_conditions(before, linux_facts(remote))
                    for r in rs:
                        r.device = {**board, **r.device}
                if o.check_outputs and "check_outputs" not in facts:
                    _check(remote, folder, model, graph, flow, label, Path(tmp), i, rs)
            else:
                rs = _runner_with_check(remote, folder, model, graph, flow, label, Path(tmp), i, o.check_outputs)
            for r in rs:
                r.device = {**facts, **r.device, "transport": "adb" if android else "ssh"}
                r.emulated = emulated
            results += rs


def _binary(remote: Remote, folder: RunFolder, o: DeviceBenchOptions, label: str) -> str | None:
    if not o.benchmark_binary:
        return None
    try:
        return install_binary(remote, folder, o.benchmark_binary, o.timeout_s)
    except BenchmarkFailed:
        if o.binary_required or isinstance(remote, AdbRemote):
            raise
        return None  # a profile's default path that this board does not have: use the Python runner


def _runner_with_check(remote, folder, model, graph, flow, label, tmp: Path, i: int, check: bool):
    if not check:
        return run_python_runner(remote, folder, graph, model, flow, label)
    from edgeq.bench.output_check import make_inputs

    inputs = make_inputs(model, tmp / f"in{i}.npz")
    remote.push(inputs, folder.file(f"in{i}.npz"))
    rs = run_python_runner(remote, folder, graph, model, flow, label, inputs=folder.file(f"in{i}.npz"),
                           outputs=folder.file(f"out{i}.npz"))
    if rs and rs[0].ok:
        _compare(remote, folder, model, inputs, tmp, i, rs)
    return rs


def _check(remote, folder, model, graph, flow, label, tmp: Path, i: int, rs: list[BenchResult]) -> None:
    """With benchmark_model: one extra run of edgeq's runner for the outputs (the tool cannot save them)."""
    from edgeq.bench.output_check import make_inputs

    inputs = make_inputs(model, tmp / f"in{i}.npz")
    remote.push(inputs, folder.file(f"in{i}.npz"))
    one = replace(flow, threads=(flow.threads[0],), runs=1, warmup=1)
    check = run_python_runner(remote, folder, graph, model, one, label, inputs=folder.file(f"in{i}.npz"),
                              outputs=folder.file(f"out{i}.npz"))
    if check and check[0].ok:
        _compare(remote, folder, model, inputs, tmp, i, rs)
    else:
        for r in rs:
            r.device["check_outputs"] = f"failed: {check[0].error if check else 'no result'}"


def _compare(remote, folder, model: Path, inputs: Path, tmp: Path, i: int, rs: list[BenchResult]) -> None:
    import numpy as np

    from edgeq.bench.output_check import compare, host_outputs

    local = tmp / f"out{i}.npz"
    remote.pull(folder.file(f"out{i}.npz"), local)
    check = compare(model, host_outputs(model, inputs), dict(np.load(local)))
    for r in rs:
        r.device.update(check.as_facts())


def run_targets(jobs: list[tuple[str, Callable[[], list[BenchResult]]]]) -> list[BenchResult]:
    """Run each (label, job) in its own thread; results in the order of ``jobs``. A job that raises becomes
    failed results for that label only. Ctrl-C: tell every job to stop, wait for their cleanup, re-raise."""
    out: dict[int, list[BenchResult]] = {}
    errors: dict[int, BaseException] = {}

    finished = [threading.Event() for _ in jobs]

    def work(i: int, job: Callable[[], list[BenchResult]]) -> None:
        try:
            out[i] = job()
        except BaseException as exc:  # noqa: BLE001 - kept and reported per target
            errors[i] = exc
        finally:
            finished[i].set()

    # Waiting on Events, not Thread.join: a KeyboardInterrupt inside join() marks a live thread as stopped
    # (CPython's bpo-45274 handling), and the cleanup wait below would then return at once.
    CANCEL.clear()
    for i, (_, job) in enumerate(jobs):
        threading.Thread(target=work, args=(i, job), daemon=True, name=f"edgeq-target-{i}").start()
    try:
        for ev in finished:
            while not ev.wait(0.2):
                pass
    except KeyboardInterrupt:
        CANCEL.set()
        end = time.monotonic() + 60
        for ev in finished:  # each job removes its run folder on the way out
            ev.wait(max(0.0, end - time.monotonic()))
        raise
    finally:
        CANCEL.clear()  # the next command in this process starts afresh
    results: list[BenchResult] = []
    for i, (label, _) in enumerate(jobs):
        exc = errors.get(i)
        if isinstance(exc, EdgeqError):
            results.append(BenchResult(model="-", target=label, error=str(exc)))
        elif exc is not None:
            results.append(BenchResult(model="-", target=label,
                                       error=f"{label}: internal error {type(exc).__name__}: {exc}"))
        results += out.get(i, [])
    return results


def _unit(value: str | None, unit: str) -> str:
    return "unknown" if value in (None, "unknown") else f"{value} {unit}"


def device_notes(results: list[BenchResult]) -> list[str]:
    """Lines worth a person's attention: throttling, output mismatches, checks that could not run."""
    seen, lines = set(), []
    for r in results:
        if r.emulated and ("emulated", r.target) not in seen:
            seen.add(("emulated", r.target))
            lines.append(f"EMULATED {r.target}: {r.emulated}; its latency is not a device speed")
    for r in results:
        d = r.device
        if d.get("transport") == "adb" and r.target not in seen:
            seen.add(r.target)
            lines.append(f"{r.target}: {d.get('model', 'unknown')} ({d.get('manufacturer', 'unknown')}), SoC "
                         f"{d.get('soc') if d.get('soc', 'unknown') != 'unknown' else d.get('platform', 'unknown')}, "
                         f"{d.get('abi', 'unknown')}, Android {d.get('android', '?')} (SDK {d.get('sdk', '?')})")
        elif d.get("transport") == "ssh" and r.target not in seen:
            seen.add(r.target)
            lines.append(f"{r.target}: board {d.get('board', 'unknown')}, {d.get('machine', '?')} CPU "
                         f"{d.get('cpu', 'unknown')} [{d.get('cpu_parts', '?')}], governor {d.get('governor', '?')}, "
                         f"CPU temp {_unit(d.get('temp_c'), 'C')}, freq {_unit(d.get('freq_mhz'), 'MHz')}")
    for r in results:
        d, name = r.device, f"{r.target} {Path(r.model).name}"
        for line in ([f"WARNING throttling on {r.target}: {d['throttling']}"] if "throttling" in d else []) + \
                    ([f"{name}: outputs vs host max |diff| {d['outputs_max_abs_diff']} (tolerance "
                      f"{d['outputs_tolerance']}): {'match' if d['outputs_match'] == 'yes' else 'MISMATCH'}"]
                     if "outputs_match" in d else []) + \
                    ([f"{r.target}: check-outputs {d['check_outputs']}"] if "check_outputs" in d else []) + \
                    ([f"{r.target}: {d['cores_note']}"] if "cores_note" in d else []):
            if line not in seen:
                seen.add(line)
                lines.append(line)
    return lines
