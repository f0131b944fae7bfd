"""Android devices over adb, through the ``adb`` command-line client (Debian's package or Google's
platform-tools: whichever is on PATH, or ``$EDGEQ_ADB``).

A serial that looks like ``HOST:PORT`` (adb over TCP/Wi-Fi) is ``adb connect``-ed first. ``adb shell`` gives
back the remote exit code (shell protocol v2), so a failing command is told apart from a failing transport by
adb's own "error:"/"adb:" messages. Remote commands are single strings built with ``shlex.quote``.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from pathlib import Path

from edgeq.transport.base import Completed, cleanup_allowed, last_line, run_local
from edgeq.transport.errors import (DeviceLost, DeviceMissing, DeviceUnauthorized, RemoteCommandFailed)

_TRANSPORT_ERRORS = re.compile(r"^(?:error|adb): (?:device|no devices|closed|protocol fault|failed to connect|"
                               r"cannot connect|connection|device offline|device unauthorized|unknown host)",
                               re.I | re.M)


# adb starts its server on first use ("* daemon started successfully"). When that happens because of edgeq,
# edgeq stops it again once its last AdbRemote closes; a server the user already had is left alone.
_SERVER = {"started_by_us": False, "open": 0}
_SERVER_LOCK = threading.Lock()


def _note_server_start(err: str) -> None:
    if "daemon started successfully" in err:
        with _SERVER_LOCK:
            _SERVER["started_by_us"] = True


def adb_binary() -> str:
    exe = os.environ.get("EDGEQ_ADB") or shutil.which("adb")
    if not exe:
        raise DeviceMissing("adb: the adb client is not installed; install it (Debian: apt-get install adb, "
                            "or Android platform-tools) or set EDGEQ_ADB=/path/to/adb")
    return exe


class AdbRemote:
    def __init__(self, serial: str | None = None, *, connect_timeout: float = 10.0):
        self.serial = serial
        self.label = f"adb:{serial}" if serial else "adb"
        self.connect_timeout = connect_timeout
        self._adb: str | None = None
        self._opened = False

    def _client(self, argv: list[str]) -> tuple[int, str, str]:
        """A connect-phase adb command, noting whether it had to start the adb server."""
        if not self._opened:
            self._opened = True
            with _SERVER_LOCK:
                _SERVER["open"] += 1
        code, out, err = run_local(argv, label=self.label, timeout=self.connect_timeout)
        _note_server_start(err)
        return code, out, err

    def _argv(self, *args: str) -> list[str]:
        self._adb = self._adb or adb_binary()
        return [self._adb, *(["-s", self.serial] if self.serial else []), *args]

    def _state_error(self, text: str, what: str) -> None:
        low = text.lower()
        if "unauthorized" in low:
            raise DeviceUnauthorized(f"{self.label}: device unauthorized; unlock the phone and accept the 'Allow "
                                     "USB debugging' prompt, then rerun")
        if "offline" in low:
            raise DeviceLost(f"{self.label}: device offline during {what}; reconnect it (adb reconnect) and rerun")
        if "not found" in low or "no devices" in low or "failed to connect" in low or "cannot connect" in low:
            raise DeviceMissing(f"{self.label}: device not found ({last_line(text)}); check 'adb devices'")
        raise DeviceLost(f"{self.label}: connection lost during {what} ({last_line(text) or 'adb failed'})")

    def connect(self) -> None:
        """Make sure exactly the wanted device is there and authorized (adb-connect a HOST:PORT serial)."""
        if self.serial is None:
            code, out, err = self._client([adb_binary(), "devices"])
            rows = [ln.split() for ln in out.splitlines()[1:] if ln.strip() and "\t" in ln]
            if not rows:
                raise DeviceMissing("adb: no device connected; plug one in with USB debugging on, or give "
                                    "--target adb:SERIAL")
            if len(rows) > 1:
                raise DeviceMissing("adb: several devices connected (" + ", ".join(r[0] for r in rows) +
                                    "); pick one with --target adb:SERIAL")
            self.serial = rows[0][0]
            self.label = f"adb:{self.serial}"
        elif re.fullmatch(r"[\w.\-\[\]:]+:\d+", self.serial):
            code, out, err = self._client([adb_binary(), "connect", self.serial])
            if "connected to" not in out:
                raise DeviceMissing(f"{self.label}: cannot connect ({last_line(out + err) or 'no answer within '
                                    f'{self.connect_timeout:.0f} s'}); is adbd listening (adb tcpip 5555) and the "
                                    "address right?")
        code, out, err = self._client(self._argv("get-state"))
        if code != 0 and self.serial and ":" in self.serial and "offline" in (out + err):
            # a TCP device whose adbd restarted stays "offline" in the server until reconnected
            self._client([adb_binary(), "disconnect", self.serial])
            self._client([adb_binary(), "connect", self.serial])
            code, out, err = self._client(self._argv("get-state"))
        if code != 0 or out.strip() != "device":
            self._state_error(out + err, "connect")

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> Completed:
        code, out, err = run_local(self._argv("shell", command), label=self.label, timeout=timeout)
        if code != 0 and _TRANSPORT_ERRORS.search(err):
            self._state_error(err, f"'{command[:60]}'")
        if check and code != 0:
            raise RemoteCommandFailed(f"{self.label}: '{command[:80]}' failed (exit {code}): "
                                      f"{last_line(err or out)}")
        return Completed(code, out, err)

    def push(self, local: Path, remote: str, *, timeout: float = 300.0) -> None:
        # adb push takes the path as an argument (no device shell involved), so no quoting is needed here
        code, out, err = run_local(self._argv("push", str(local), remote), label=self.label, timeout=timeout)
        if code != 0:
            if _TRANSPORT_ERRORS.search(err + out):
                self._state_error(err + out, f"pushing {Path(local).name}")
            raise RemoteCommandFailed(f"{self.label}: cannot push {Path(local).name} to {remote}: "
                                      f"{last_line(err or out)}")

    def pull(self, remote: str, local: Path, *, timeout: float = 300.0) -> None:
        code, out, err = run_local(self._argv("pull", remote, str(local)), label=self.label, timeout=timeout)
        if code != 0:
            if _TRANSPORT_ERRORS.search(err + out):
                self._state_error(err + out, f"pulling {remote}")
            raise RemoteCommandFailed(f"{self.label}: cannot pull {remote}: {last_line(err or out)}")

    def close(self) -> None:
        """Stop the adb server if edgeq started it and this was the last device using it; a server the user
        already ran belongs to their session and keeps running."""
        if not self._opened:
            return
        self._opened = False
        with _SERVER_LOCK:
            _SERVER["open"] -= 1
            stop = _SERVER["open"] == 0 and _SERVER["started_by_us"]
            if stop:
                _SERVER["started_by_us"] = False
        if stop:
            with cleanup_allowed(), contextlib.suppress(Exception):  # best effort, also after Ctrl-C
                run_local([adb_binary(), "kill-server"], label=self.label, timeout=10)
