"""The interface both transports implement, and a helper to run one local client command."""
from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edgeq.transport.errors import DeviceTimeout


@dataclass(frozen=True)
class Completed:
    code: int
    out: str
    err: str


class Remote(Protocol):
    label: str  # e.g. "adb:10.77.1.2:5555", "ssh://pi@raspberrypi"

    def connect(self) -> None: ...

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> Completed:
        """Run a shell command string (already quoted) on the device."""

    def push(self, local: Path, remote: str, *, timeout: float = 300.0) -> None: ...

    def pull(self, remote: str, local: Path, *, timeout: float = 300.0) -> None: ...

    def close(self) -> None: ...


class Cancelled(Exception):
    """Raised in a worker thread when the user pressed Ctrl-C (the main thread set the cancel event)."""


CANCEL = threading.Event()
_LOCAL = threading.local()


class cleanup_allowed:
    """Within this block the current thread's client commands run even after Ctrl-C (removing run folders)."""

    def __enter__(self):
        _LOCAL.cleanup = True

    def __exit__(self, *exc):
        _LOCAL.cleanup = False


def _cancelled() -> bool:
    return CANCEL.is_set() and not getattr(_LOCAL, "cleanup", False)


def run_local(argv: list[str], *, label: str, timeout: float, stdin: bytes | None = None,
              binary: bool = False) -> tuple[int, bytes | str, str]:
    """Run a client command (adb/ssh); kill it on timeout or cancel. Returns (code, stdout, stderr)."""
    if _cancelled():
        raise Cancelled()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    waited = 0.0
    box: dict = {}
    comm = threading.Thread(target=_communicate, args=(proc, stdin, box), daemon=True)
    comm.start()
    while comm.is_alive():
        comm.join(0.2)
        waited += 0.2
        if _cancelled() or waited > timeout:
            proc.kill()
            # an ssh multiplexing client hands its pipes to the master, which keeps them open while the remote
            # command lives on: don't wait for EOF forever (the run folder cleanup ends that command)
            comm.join(5)
            if _cancelled():
                raise Cancelled()
            raise DeviceTimeout(f"{label}: '{' '.join(argv[-1:])[:80]}' did not finish within {timeout:.0f} s; "
                                "the device may hang or be very slow (raise --timeout)")
    out, err = box.get("out", b""), box.get("err", b"").decode(errors="replace")
    return proc.returncode, (out if binary else out.decode(errors="replace")), err


def _communicate(proc: subprocess.Popen, stdin: bytes | None, box: dict) -> None:
    box["out"], box["err"] = proc.communicate(stdin)


def last_line(text: str) -> str:
    """The last non-empty line (clients print the reason last)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
