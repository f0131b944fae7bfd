"""Is a "device" really this machine? An emulated target's latency says nothing about the device it imitates.

A board or phone reached over ssh/adb that reports the same kernel boot id as this host runs on this host's
kernel: a container, or (when its CPU architecture differs) qemu user-mode emulation, as the device lab's
stand-ins do. A target profile can also declare ``emulated = true`` (a qemu-system VM has its own kernel).
"""
from __future__ import annotations

import platform
from pathlib import Path

from edgeq.transport.base import Remote

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _local_boot_id() -> str | None:
    try:
        return Path(_BOOT_ID).read_text().strip() or None
    except OSError:
        return None


def detect(remote: Remote) -> str | None:
    """Why ``remote`` is emulated on this host, or None when nothing says so."""
    mine = _local_boot_id()
    if mine is None:
        return None
    done = remote.run(f"cat {_BOOT_ID} 2>/dev/null; uname -m", timeout=60, check=False)
    lines = [x.strip() for x in done.out.splitlines() if x.strip()]
    if done.code != 0 or len(lines) < 2 or lines[0] != mine:
        return None
    arch, here = lines[-1], platform.machine()
    if arch != here:
        return f"qemu user-mode emulation on this host ({arch} on {here}; same kernel boot id)"
    return "runs on this host's kernel (same kernel boot id): a container, not a separate device"
