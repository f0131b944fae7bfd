"""The device lab: a Raspberry Pi stand-in (real OpenSSH sshd) and an Android phone stand-in (real AOSP adbd),
aarch64 userlands under qemu-user 10, each in its own network namespace. Root only.

``DeviceLab().up()`` builds what is missing (see build.py), registers *its own* binfmt entry, creates the two
namespaces with a veth pair each, starts the daemons and records every PID in ``.devicelab/state.json``;
``down()`` ends exactly those processes, deletes the namespaces (their veth ends go with them) and removes the
binfmt entry. Traffic only ever goes to the lab's own addresses inside these namespaces.
Latency measured here is meaningless (emulation is 170-300x slower than a real board).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.devicelab import build

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "edgeq-aarch64"
# The ELF header of aarch64 executables (the same magic/mask every qemu binfmt registration uses).
_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
STATE = build.LAB / "state.json"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Device:
    name: str  # "pi" | "phone"
    netns: str
    host_if: str
    dev_if: str
    host_addr: str
    addr: str
    port: int
    root: Path


PI = Device("pi", "edgeq-pi", "eqpi-h", "eqpi-d", "10.77.0.1", "10.77.0.2", 22, build.PI_ROOT)
PHONE = Device("phone", "edgeq-phone", "eqph-h", "eqph-d", "10.77.1.1", "10.77.1.2", 5555, build.PHONE_ROOT)


@dataclass
class LabState:
    pids: dict[str, int] = field(default_factory=dict)
    netns: list[str] = field(default_factory=list)
    binfmt: bool = False
    mounted_binfmt: bool = False

    def save(self) -> None:
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls) -> LabState:
        try:
            return cls(**json.loads(STATE.read_text()))
        except (OSError, ValueError, TypeError):
            return cls()


def is_root() -> bool:
    return os.geteuid() == 0


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def wait_port(addr: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP on the lab address (a lab host: never any other address)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((addr, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


class DeviceLab:
    def __init__(self) -> None:
        self.state = LabState.load()

    # -- binfmt ----------------------------------------------------------------------------------------------
    def _register_binfmt(self) -> None:
        if not (BINFMT_DIR / "register").exists():
            _sh("mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR))
            self.state.mounted_binfmt = True
        entry = BINFMT_DIR / BINFMT_NAME
        if entry.exists():
            entry.write_text("-1")
        # F: the kernel opens qemu now, so it works inside chroots; P: keep argv[0]; C: setuid credentials.
        (BINFMT_DIR / "register").write_text(f":{BINFMT_NAME}:M::{_MAGIC}:{_MASK}:{build.QEMU}:FPC")
        self.state.binfmt = True
        self.state.save()

    def _unregister_binfmt(self) -> None:
        entry = BINFMT_DIR / BINFMT_NAME
        if self.state.binfmt and entry.exists():
            entry.write_text("-1")
        self.state.binfmt = False
        if self.state.mounted_binfmt:
            left = {p.name for p in BINFMT_DIR.iterdir()} - {"register", "status"}
            if not left:
                _sh("umount", str(BINFMT_DIR), check=False)
            self.state.mounted_binfmt = False

    # -- network ---------------------------------------------------------------------------------------------
    def _netns(self, d: Device) -> None:
        if d.netns in self.state.netns:
            return
        _sh("ip", "netns", "del", d.netns, check=False)  # leftover of a crashed run
        _sh("ip", "link", "del", d.host_if, check=False)
        _sh("ip", "netns", "add", d.netns)
        self.state.netns.append(d.netns)
        self.state.save()
        _sh("ip", "link", "add", d.host_if, "type", "veth", "peer", "name", d.dev_if)
        _sh("ip", "link", "set", d.dev_if, "netns", d.netns)
        _sh("ip", "addr", "add", f"{d.host_addr}/24", "dev", d.host_if)
        _sh("ip", "link", "set", d.host_if, "up")
        _sh("ip", "-n", d.netns, "addr", "add", f"{d.addr}/24", "dev", d.dev_if)
        _sh("ip", "-n", d.netns, "link", "set", d.dev_if, "up")
        _sh("ip", "-n", d.netns, "link", "set", "lo", "up")

    # -- daemons ---------------------------------------------------------------------------------------------
    def start(self, d: Device, timeout: float = 60.0) -> int:
        """Start the device's daemon (sshd or adbd) and wait until it accepts connections; returns its PID."""
        if d.name in self.state.pids and _alive(self.state.pids[d.name]):
            return self.state.pids[d.name]
        r = str(d.root)
        mounts = (f"mount -t proc proc {r}/proc && mount --rbind /sys {r}/sys && mount --rbind /dev {r}/dev && "
                  f"mount --bind {build.SITE} {r}/opt/site")
        if d is PI:
            daemon = f"hostname raspberrypi && exec env -i PATH={PATH} QEMU_CPU={build.PI_CPU} chroot {r} " \
                     "/usr/sbin/sshd -D -e " \
                     "-f /etc/ssh/sshd_config.edgeq"
        else:
            daemon = f"hostname localhost && cd {r}/data/local/tmp && exec env -i PATH={PATH} " \
                     f"QEMU_CPU={build.PHONE_CPU} " \
                     f"chroot {r} /usr/lib/android-sdk/platform-tools/adbd"
        # A PID namespace with --kill-child: ending the one recorded unshare process ends everything inside.
        cmd = ["ip", "netns", "exec", d.netns, "unshare", "--uts", "--mount", "--pid", "--fork", "--kill-child",
               "sh", "-c", f"{mounts} && {daemon}"]
        log = open(build.LAB / f"{d.name}.log", "ab")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self.state.pids[d.name] = proc.pid
        self.state.save()
        if not wait_port(d.addr, d.port, timeout):
            self.stop(d)
            tail = (build.LAB / f"{d.name}.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"{d.name} stand-in did not come up on {d.addr}:{d.port}: {tail}")
        return proc.pid

    def stop(self, d: Device) -> None:
        """End exactly the process this lab started for the device (and, by the PID namespace, its children)."""
        pid = self.state.pids.pop(d.name, None)
        if pid and _alive(pid) and b"unshare" in _cmdline(pid):
            # unshare --fork blocks SIGTERM while it waits for its child; SIGKILL it and --kill-child's
            # parent-death signal kills the namespace's first process, which takes the whole PID namespace along.
            os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
        self.state.save()

    # -- whole lab -------------------------------------------------------------------------------------------
    def up(self) -> None:
        if not is_root():
            raise PermissionError("the device lab needs root (network namespaces, binfmt_misc, chroot)")
        build.build_all(PI.addr)
        self._register_binfmt()
        for root in (PI.root, PHONE.root):
            self._compile_in_chroot(root)
        for d in (PI, PHONE):
            self._netns(d)
            self.start(d)

    def _compile_in_chroot(self, root: Path) -> None:
        """Fallback when the host has no Python 3.11: byte-compile inside the root, under emulation (slow, once)."""
        if (root / ".compiled").exists():
            return
        sh = (f"mount --bind {build.SITE} {root}/opt/site && exec env -i PATH={PATH} chroot {root} "
              "python3 -m compileall -q /usr/lib/python3.11 /opt/site")
        subprocess.run(["unshare", "--mount", "sh", "-c", sh], stdout=subprocess.DEVNULL, check=False)
        (root / ".compiled").touch()

    def down(self) -> None:
        for d in (PI, PHONE):
            self.stop(d)
        for ns in list(self.state.netns):
            _sh("ip", "netns", "del", ns, check=False)
            self.state.netns.remove(ns)
        for d in (PI, PHONE):
            _sh("ip", "link", "del", d.host_if, check=False)
        self._unregister_binfmt()
        self.state.save()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("Z"):
                os.waitpid(pid, os.WNOHANG)
                return False
    except (OSError, IndexError, ChildProcessError):
        pass
    return True


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
