"""What runs on one connected device: a run folder, then LiteRT's benchmark_model or edgeq's Python runner.

Both flows work over any ``edgeq.transport`` Remote (adb or ssh). Models are copied under numbered names
(``m0.tflite`` ...) into a fresh ``mktemp -d`` folder, every path in a remote command goes through
``shlex.quote``, and the folder is removed again whatever happens (errors, timeouts, Ctrl-C).
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.bench.errors import BenchmarkFailed
from edgeq.bench.result import BenchResult, DelegateCoverage, LatencyStats
from edgeq.transport.base import Remote, cleanup_allowed

RUNNER = Path(__file__).with_name("device_runner.py")
RUNNER_MARK = "EDGEQ_DEVICE_RESULT "
DELEGATES = ("none", "xnnpack", "gpu", "nnapi", "hexagon")  # or "external:/path/lib.so"


@dataclass(frozen=True)
class FlowOptions:
    threads: tuple[int, ...] = (1,)
    runs: int = 10
    warmup: int = 1
    benchmark_binary: str | None = None  # local file to copy, or a path already on the device
    delegate: str = "xnnpack"
    delegate_options: dict[str, str] = field(default_factory=dict)
    cpu_mask: str | None = None  # taskset mask (hex), e.g. big cores
    op_profile: bool = False
    timeout_s: float = 600.0


class RunFolder:
    """``mktemp -d`` under ``base`` on the device; removed on exit."""

    def __init__(self, remote: Remote, base: str):
        self.remote, self.base, self.path = remote, base, ""

    def __enter__(self) -> RunFolder:
        out = self.remote.run(f"mktemp -d {shlex.quote(self.base.rstrip('/') + '/edgeq-run.XXXXXX')}", timeout=60)
        self.path = out.out.strip().splitlines()[-1]
        return self

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def __exit__(self, *exc) -> None:
        if self.path.startswith(self.base.rstrip("/") + "/edgeq-run.") and self.path[-1].isalnum():
            try:
                with cleanup_allowed():  # end what still runs from the folder (Ctrl-C, timeout), then remove it
                    # neither the pattern nor the glob (last character in brackets) matches this shell's own
                    # command line, so pkill cannot end the shell doing the cleanup
                    glob = shlex.quote(self.path[:-1]) + f"[{self.path[-1]}]"
                    self.remote.run(f"pkill -f {shlex.quote(_own_pattern(self.path))}; rm -rf {glob}",
                                    timeout=60, check=False)
            except Exception:  # noqa: BLE001 - the device may be gone; nothing more we can do
                pass


def _own_pattern(path: str) -> str:
    """A regex matching PATH in command lines but not the pkill command's own shell (``[/]tmp/...``)."""
    body = "".join(c if c.isalnum() or c in "/_-" else ("[.]" if c == "." else ".") for c in path[1:])
    return f"[{path[0]}]{body}"


def push_models(remote: Remote, folder: RunFolder, models: list[Path], timeout: float) -> list[str]:
    remote_paths = []
    for i, m in enumerate(models):
        dest = folder.file(f"m{i}.tflite")
        remote.push(m, dest, timeout=timeout)
        remote_paths.append(dest)
    return remote_paths


def benchmark_model_flags(graph: str, threads: int, o: FlowOptions) -> list[str]:
    """benchmark_model's flags for one run (see shared reference: flags that matter)."""
    f = [f"--graph={graph}", f"--num_threads={threads}", f"--warmup_runs={o.warmup}", f"--num_runs={o.runs}",
         "--report_peak_memory_footprint=true"]
    d = o.delegate
    if d == "none":
        f.append("--use_xnnpack=false")
    elif d == "xnnpack":
        f.append("--use_xnnpack=true")
    elif d in ("gpu", "nnapi", "hexagon"):
        f.append(f"--use_{d}=true")
    elif d.startswith("external:"):
        f.append(f"--external_delegate_path={d.split(':', 1)[1]}")
        if o.delegate_options:
            f.append("--external_delegate_options=" + ";".join(f"{k}:{v}" for k, v in o.delegate_options.items()))
    if d == "gpu" and o.delegate_options.get("gpu_precision_loss_allowed"):
        f.append(f"--gpu_precision_loss_allowed={o.delegate_options['gpu_precision_loss_allowed']}")
    if o.op_profile:
        f += ["--enable_op_profiling=true", "--op_profiling_output_mode=stdout"]
    return f


def install_binary(remote: Remote, folder: RunFolder, binary: str, timeout: float) -> str:
    """Copy a local benchmark_model to the run folder, or check one already on the device."""
    local = Path(binary)
    if local.is_file():
        dest = folder.file("benchmark_model")
        remote.push(local, dest, timeout=timeout)
        remote.run(f"chmod 755 {shlex.quote(dest)}", timeout=60)
        return dest
    if remote.run(f"test -x {shlex.quote(binary)}", timeout=60, check=False).code != 0:
        raise BenchmarkFailed(f"{remote.label}: --benchmark-binary {binary}: not a local file and not an executable "
                              "on the device; give the path of LiteRT's benchmark_model build for this device")
    return binary


def run_benchmark_model(remote: Remote, binary: str, graph: str, local_model: Path, threads: int,
                        o: FlowOptions, target: str) -> BenchResult:
    from edgeq.bench.parser import parse_benchmark_output

    cmd = " ".join(shlex.quote(x) for x in [binary, *benchmark_model_flags(graph, threads, o)])
    if o.cpu_mask:
        cmd = f"taskset {shlex.quote(o.cpu_mask)} {cmd}"
    done = remote.run(f"{cmd} 2>&1", timeout=o.timeout_s, check=False)
    try:
        result = parse_benchmark_output(done.out, target=target, model=str(local_model))
    except BenchmarkFailed as exc:
        return BenchResult(model=str(local_model), target=target, threads=threads, delegate=o.delegate,
                           error=f"{target}: {exc}", output_tail=done.out[-2000:], tool="benchmark_model")
    result.threads = threads
    result.delegate = o.delegate
    if done.code != 0:
        result.device["exit_code"] = str(done.code)
    return result


def run_python_runner(remote: Remote, folder: RunFolder, graph: str, local_model: Path, o: FlowOptions,
                      target: str, *, inputs: str | None = None, outputs: str | None = None) -> list[BenchResult]:
    """edgeq's one-file runner on the board: one process per model, one result per thread count."""
    runner = folder.file("edgeq_runner.py")
    args = ["python3", runner, "--model", graph, "--threads", ",".join(map(str, o.threads)),
            "--warmup", str(o.warmup), "--runs", str(o.runs)]
    if o.delegate == "none":
        args.append("--no-xnnpack")
    if inputs:
        args += ["--inputs", inputs]
    if outputs:
        args += ["--outputs", outputs]
    cmd = " ".join(shlex.quote(a) for a in args)
    if o.cpu_mask:
        cmd = f"taskset {shlex.quote(o.cpu_mask)} {cmd}"
    done = remote.run(cmd + " 2>&1", timeout=o.timeout_s, check=False)
    lines = [ln[len(RUNNER_MARK):] for ln in done.out.splitlines() if ln.startswith(RUNNER_MARK)]
    if not lines:
        tail = " | ".join(done.out.strip().splitlines()[-3:])[:300] or f"exit {done.code}"
        hint = ("; the board needs python3 >= 3.9 with numpy and ai-edge-litert or tflite-runtime "
                "(pip install ai-edge-litert)" if "ModuleNotFoundError" in done.out or "No module" in done.out else "")
        err = f"{target}: edgeq's device runner failed for {local_model.name} ({tail}){hint}"
        return [BenchResult(model=str(local_model), target=target, threads=t, delegate=o.delegate, error=err,
                            output_tail=done.out[-2000:], tool="edgeq-device-runner") for t in o.threads]
    return [runner_result(json.loads(x), local_model, target, o.delegate) for x in lines]


def runner_result(d: dict, local_model: Path, target: str, delegate: str) -> BenchResult:
    r = BenchResult(model=str(local_model), target=target, threads=d.get("threads"), delegate=delegate,
                    tool="edgeq-device-runner")
    r.device = {k: str(v) for k, v in d.get("device", {}).items()}
    r.device.update(board_conditions(d))
    if d.get("error"):
        r.error = f"{target}: {local_model.name}: {d['error']}"
        return r
    r.init_ms, r.first_inference_ms = d.get("init_ms"), d.get("first_inference_ms")
    r.warmup = LatencyStats.from_samples(d.get("warmup_ms", []))
    r.inference = LatencyStats.from_samples(d.get("runs_ms", []))
    r.peak_memory_mb = d.get("peak_memory_mb")
    r.delegation = [DelegateCoverage(x["delegate"], x["nodes_delegated"], x["nodes_total"], x.get("partitions"),
                                     tuple(x.get("not_delegated", ()))) for x in d.get("delegation", [])]
    return r


_LINUX_FACTS = r"""
r() { [ -r "$1" ] && tr -d '\000' < "$1" || echo unknown; }
echo "board=$(r /proc/device-tree/model)"
echo "machine=$(uname -m)"
echo "system=$(uname -sr)"
echo "cpu=$(grep -m1 -E '^(Model|Hardware|model name)' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "cpu_parts=$(grep '^CPU part' /proc/cpuinfo | cut -d: -f2 | sort -u | tr -d ' ' | paste -sd, -)"
echo "cpu_count=$(grep -c ^processor /proc/cpuinfo)"
echo "governor=$(r /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor)"
t=$(r /sys/class/thermal/thermal_zone0/temp); echo "temp_mc=$t"
f=$(r /sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq); echo "freq_khz=$f"
command -v vcgencmd >/dev/null && echo "throttled=$(vcgencmd get_throttled | cut -d= -f2)"
true
"""


def linux_facts(remote: Remote) -> dict:
    """Board facts with nothing but a POSIX shell (for benchmark_model runs, where no Python may exist)."""
    kv = {}
    for line in remote.run(_LINUX_FACTS, timeout=60).out.splitlines():
        k, _, v = line.partition("=")
        kv[k.strip()] = v.strip() or "unknown"
    return kv


def shell_conditions(before: dict, after: dict) -> dict[str, str]:
    """Temperature/frequency before and after a benchmark_model run, as ``board_conditions`` wants them."""
    temps = [int(x["temp_mc"]) / 1000.0 for x in (before, after) if x.get("temp_mc", "").lstrip("-").isdigit()]
    freqs = [int(x["freq_khz"]) / 1000.0 for x in (before, after) if x.get("freq_khz", "").isdigit()]
    facts = {k: v for k, v in before.items() if k not in ("temp_mc", "freq_khz", "throttled")}
    return {**facts, **board_conditions({"temps_c": temps, "min_freqs_mhz": freqs, "device": facts,
                                         "throttled": after.get("throttled")})}


THROTTLE_TEMP_C = 80.0  # Raspberry Pi firmware starts soft throttling at 80 C


def board_conditions(d: dict) -> dict[str, str]:
    """CPU temperature/frequency over the run and a throttling warning when the data shows one."""
    temps, freqs = d.get("temps_c") or [], d.get("min_freqs_mhz") or []
    out = {"temp_c": f"{temps[0]:.1f}->{max(temps):.1f} (max)" if temps else "unknown",
           "freq_mhz": f"{min(freqs):.0f}..{max(freqs):.0f}" if freqs else "unknown"}
    reasons = []
    thr = d.get("throttled")
    if thr not in (None, "0x0"):
        reasons.append(f"firmware reports throttling (get_throttled={thr})")
    if temps and max(temps) >= THROTTLE_TEMP_C:
        reasons.append(f"CPU reached {max(temps):.1f} C")
    mx = d.get("device", {}).get("max_freq_mhz", "unknown")
    if freqs and mx.isdigit() and min(freqs) < 0.9 * int(mx) and d.get("device", {}).get("governor") == "performance":
        reasons.append(f"frequency fell to {min(freqs):.0f} MHz of {mx} MHz under the performance governor")
    if reasons:
        out["throttling"] = "; ".join(reasons)
    return out
