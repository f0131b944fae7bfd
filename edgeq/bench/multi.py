"""``edgeq bench --target A --target B ...``: each target in its own thread, one list of results.

A target is ``host``, a profile name/file (``rpi4``, ``android-cpu``, ``my-board.toml``: its transport,
address, threads, benchmark_model path and big-core mask are used unless flags override them), or a
direct device address: ``adb``, ``adb:SERIAL`` or ``ssh://[user@]host[:port]``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgeq.bench.devices import DeviceBenchOptions, is_device_target, run_target, run_targets
from edgeq.bench.host import HostBenchOptions, bench_host
from edgeq.bench.result import BenchResult
from edgeq.progress import Progress, Silent


def _device_job(spec: str, label: str, models: list[Path], o: DeviceBenchOptions):
    return lambda: run_target(spec, models, o, label=label)


def plan(specs: list[str], models: list[Path], *, threads: tuple[int, ...] | None, host: HostBenchOptions,
         device: DeviceBenchOptions, progress: Progress | None = None):
    """(label, job, is_device) per target; profiles are read here so that a bad name fails before anything runs."""
    from edgeq.targets import DelegateKind, Transport, load_target

    jobs = []
    for spec in specs:
        if is_device_target(spec):
            o = replace(device, threads=threads or device.threads)
            jobs.append((spec, _device_job(spec, spec, models, o), True))
            continue
        prof = load_target(spec)
        if prof.transport is Transport.LOCAL:
            h = replace(host, threads=threads or (prof.threads,), target=prof.name)
            p = progress if len(specs) == 1 else None
            jobs.append((prof.name, lambda h=h, p=p: bench_host(models, h, p or Silent()), False))
            continue
        address = prof.address or ""
        dspec = ("adb:" + address if address else "adb") if prof.transport is Transport.ADB else f"ssh://{address}"
        d0 = prof.delegates[0] if prof.delegates else None
        delegate = device.delegate
        if not device.delegate_explicit and d0 is not None:
            delegate = f"external:{d0.library}" if d0.kind is DelegateKind.EXTERNAL and d0.library else d0.kind.value
        o = replace(device, threads=threads or (prof.threads,), delegate=delegate,
                    delegate_options=device.delegate_options or dict(d0.options if d0 else {}),
                    benchmark_binary=device.benchmark_binary or prof.benchmark_binary,
                    binary_required=device.benchmark_binary is not None,
                    big_core_mask=prof.cpu.big_core_mask, work_dir=device.work_dir or prof.work_dir,
                    emulated=f"declared emulated in target profile {prof.name}" if prof.emulated else None)
        jobs.append((prof.name, _device_job(dspec, prof.name, models, o), True))
    return jobs


def bench_targets(specs: list[str], models: list[Path], *, threads: tuple[int, ...] | None,
                  host: HostBenchOptions, device: DeviceBenchOptions,
                  progress: Progress | None = None) -> list[BenchResult]:
    """Run every target (in parallel when there are several) and return all results, target by target."""
    jobs = plan(specs, models, threads=threads, host=host, device=device, progress=progress)
    if len(jobs) == 1 and not jobs[0][2]:
        return jobs[0][1]()
    return run_targets([(label, job) for label, job, _ in jobs])  # device jobs always go through it: Ctrl-C then cleans their run folders
