"""Linux boards over SSH, through the system OpenSSH client (``ssh`` in a subprocess).

Why the system client rather than paramiko/asyncssh: it is what the user already uses for the board, so their
~/.ssh/config (ProxyJump, User, Port, IdentityFile), keys, ssh-agent, hashed known_hosts and certificates all
work unchanged, with no new Python dependency. ``BatchMode=yes`` means it never asks for a password: no
password can end up on a command line or in a prompt we cannot see. Host keys are checked
(``StrictHostKeyChecking=yes``) unless the user explicitly accepts a new key (``accept-new``, which still
refuses a *changed* key). One master connection is shared by all commands of a run (ControlMaster), which
matters on slow boards where each handshake costs seconds. Files travel as ``cat > QUOTED_PATH`` over ssh, so
every remote path goes through ``shlex.quote`` and nothing in a file name reaches a shell.
"""
from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeq.transport.base import Completed, cleanup_allowed, last_line, run_local
from edgeq.transport.errors import (DeviceLost, DeviceMissing, DeviceUnauthorized, HostKeyError,
                                    RemoteCommandFailed)

_SPEC = re.compile(r"^ssh://(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[0-9a-fA-F:]+\]|[^@/:\s]+)(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class SshOptions:
    identity: Path | None = None  # extra key file (-i); the agent and ~/.ssh keys are used as usual
    known_hosts: Path | None = None  # a known_hosts file instead of ~/.ssh/known_hosts
    accept_new_host_key: bool = False  # trust a host key seen for the first time (never a changed one)
    connect_timeout: int = 10  # seconds for TCP connect + banner; bench lowers it to --timeout
    ssh: str = "ssh"


@dataclass(frozen=True)
class SshAddress:
    user: str | None
    host: str
    port: int | None

    @property
    def label(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"ssh://{who}{self.host}" + (f":{self.port}" if self.port else "")


def parse_ssh_target(spec: str) -> SshAddress:
    from edgeq.bench.errors import TargetError

    m = _SPEC.match(spec)
    if not m:
        raise TargetError(f"target '{spec}': give ssh://[user@]host[:port], e.g. ssh://pi@raspberrypi.local")
    return SshAddress(m.group("user"), m.group("host").strip("[]"), int(m.group("port")) if m.group("port") else None)


class SshRemote:
    def __init__(self, address: SshAddress, options: SshOptions = SshOptions()):
        self.address = address
        self.options = options
        self.label = address.label
        self._ctl = tempfile.TemporaryDirectory(prefix="edgeq-ssh-")

    def _argv(self, command: str | None, *extra: str) -> list[str]:
        o = self.options
        argv = [o.ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={o.connect_timeout}",
                "-o", "StrictHostKeyChecking=" + ("accept-new" if o.accept_new_host_key else "yes"),
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._ctl.name}/cm", "-o", "ControlPersist=300"]
        if o.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}"]
        if o.identity:
            argv += ["-i", str(o.identity)]
        if self.address.port:
            argv += ["-p", str(self.address.port)]
        if self.address.user:
            argv += ["-l", self.address.user]
        return argv + list(extra) + ["--", self.address.host] + ([command] if command is not None else [])

    def _fail(self, code: int, err: str, what: str) -> None:
        """Turn ssh's own failures (exit 255) into one-line device errors."""
        reason = last_line(err)
        low = err.lower()
        if "remote host identification has changed" in low or "host key for" in low and "has changed" in low:
            raise HostKeyError(f"{self.label}: the host key differs from the one in known_hosts (a re-imaged board, "
                               "or someone in between); check it, then remove the old line with ssh-keygen -R")
        if "host key verification failed" in low or "no " in low and "host key is known" in low:
            raise HostKeyError(f"{self.label}: host key not known; check the board's key and rerun with "
                               "--accept-new-host-key (or ssh to it once yourself)")
        if "permission denied" in low:
            raise DeviceUnauthorized(f"{self.label}: the board refused our keys ({reason}); add your public key to "
                                     "~/.ssh/authorized_keys on the board or pass --ssh-identity KEY")
        host, port = self.address.host, self.address.port or 22
        if "could not resolve" in low or "name or service not known" in low:
            raise DeviceMissing(f"{self.label}: host name '{host}' does not resolve ({reason}); check the spelling "
                                "or use the board's IP address")
        if "connection refused" in low:
            raise DeviceMissing(f"{self.label}: nothing accepts ssh connections on {host} port {port} (connection "
                                "refused); check the port and that sshd runs on the board")
        if "timed out" in low:
            raise DeviceMissing(f"{self.label}: no answer from {host} port {port} within "
                                f"{self.options.connect_timeout} s ({reason}); check the address and that the board "
                                "is on (raise --timeout for a slow link)")
        if "no route to host" in low or "network is unreachable" in low:
            raise DeviceMissing(f"{self.label}: {host} is not reachable from here ({reason}); check the network")
        if not reason:
            raise DeviceLost(f"{self.label}: connection lost during {what}: ssh exited {code} without saying why; "
                             f"run 'ssh -v {'-p ' + str(port) + ' ' if self.address.port else ''}{host} true' to see")
        raise DeviceLost(f"{self.label}: connection lost during {what} ({reason})")

    def connect(self) -> None:
        self.run("true", timeout=self.options.connect_timeout + 60)

    def run(self, command: str, *, timeout: float = 120.0, check: bool = True) -> Completed:
        code, out, err = run_local(self._argv(command), label=self.label, timeout=timeout)
        if code == 255:
            self._fail(code, err, f"'{command[:60]}'")
        if check and code != 0:
            raise RemoteCommandFailed(f"{self.label}: '{command[:80]}' failed (exit {code}): {last_line(err)}")
        return Completed(code, out, err)

    def push(self, local: Path, remote: str, *, timeout: float = 300.0) -> None:
        data = Path(local).read_bytes()
        code, _, err = run_local(self._argv("cat > " + shlex.quote(remote)), label=self.label, timeout=timeout,
                                 stdin=data)
        if code == 255:
            self._fail(code, err, f"copying {Path(local).name}")
        if code != 0:
            raise RemoteCommandFailed(f"{self.label}: cannot write {remote}: {last_line(err)}")

    def pull(self, remote: str, local: Path, *, timeout: float = 300.0) -> None:
        code, out, err = run_local(self._argv("cat " + shlex.quote(remote)), label=self.label, timeout=timeout,
                                   binary=True)
        if code == 255:
            self._fail(code, err, f"reading {remote}")
        if code != 0:
            raise RemoteCommandFailed(f"{self.label}: cannot read {remote}: {last_line(err)}")
        Path(local).write_bytes(out)

    def close(self) -> None:
        """End the shared master connection (if one was opened) and remove its socket folder."""
        if Path(self._ctl.name, "cm").exists():
            try:
                with cleanup_allowed():
                    run_local(self._argv(None, "-O", "exit"), label=self.label, timeout=15)
            except Exception:  # noqa: BLE001 - closing is best effort; the master also times out by itself
                pass
        self._ctl.cleanup()
