"""Emulated targets are labelled in edgeq's own table, JSON and plot, and detected from the device itself."""
from __future__ import annotations

import json
import platform
from pathlib import Path

from edgeq.bench import emulation
from edgeq.bench.compare import Comparison, Variant, render_markdown
from edgeq.bench.render import render_markdown as bench_md, render_text
from edgeq.bench.result import BenchResult, LatencyStats
from edgeq.transport.base import Completed

HOST_BOOT = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


class Shell:
    """A device whose shell prints a fixed boot id and architecture."""

    label = "ssh://pi@board"

    def __init__(self, boot_id: str, arch: str):
        self.out = f"{boot_id}\n{arch}\n"

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> Completed:
        return Completed(0, self.out, "")


def test_same_kernel_other_arch_is_qemu_user():
    other = "aarch64" if platform.machine() != "aarch64" else "x86_64"
    why = emulation.detect(Shell(HOST_BOOT, other))
    assert why is not None and "qemu user-mode" in why and other in why


def test_same_kernel_same_arch_is_a_container_not_a_device():
    assert "container" in emulation.detect(Shell(HOST_BOOT, platform.machine()))


def test_another_kernel_is_a_device():
    assert emulation.detect(Shell("00000000-1111-2222-3333-444444444444", "aarch64")) is None


def _result(target: str, p50: float, emulated: str | None) -> BenchResult:
    return BenchResult(model="m_int8.tflite", target=target, threads=1, emulated=emulated,
                       inference=LatencyStats(count=5, mean_ms=p50, p50_ms=p50))


def test_emulated_target_is_marked_in_table_json_and_notes():
    host, pi = _result("host", 0.04, None), _result("ssh://pi@10.77.0.2", 7.1, "qemu user-mode emulation")
    c = Comparison(variants=[Variant(model="m_int8.tflite", size_bytes=1000, latency={"host": host,
                                                                                     pi.target: pi})],
                   targets=["host", pi.target])
    md = render_markdown(c)
    header = md.splitlines()[0]
    assert "ssh://pi@10.77.0.2 p50 ms EMULATED" in header and "host p50 ms EMULATED" not in header
    assert "EMULATED ssh://pi@10.77.0.2: qemu user-mode emulation" in md
    assert json.loads(json.dumps(c.to_dict()))["emulated"] == {pi.target: "qemu user-mode emulation"}
    assert BenchResult.from_dict(pi.to_dict()).emulated == "qemu user-mode emulation"
    assert "EMULATED target ssh://pi@10.77.0.2" in render_text([pi]) and "EMULATED" in bench_md([pi])
    assert "EMULATED" not in render_text([host])
