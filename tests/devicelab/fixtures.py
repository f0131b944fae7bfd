"""pytest fixtures for the device tests: the lab (root only; built once, cached) and tiny converted models.

Import them into a test module with ``from tests.devicelab.fixtures import ...``. The lab fixture stops exactly
the daemons it started, deletes its namespaces and its binfmt entry, and ends the adb server it started on a
private port (the user's own adb server, if any, is never touched).
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.devicelab import build
from tests.devicelab.lab import PHONE, PI, DeviceLab, is_root

ROOT = Path(__file__).resolve().parents[2]
STANDIN = Path(__file__).with_name("benchmark_model_standin.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    lab: DeviceLab
    pi: str  # ssh://pi@ADDR
    phone: str  # adb:ADDR:PORT
    ssh_args: list[str]  # --ssh-identity K --known-hosts F
    keys: Path
    build_s: float

    def pi_tmp_runs(self) -> list[Path]:
        return sorted((PI.root / "tmp").glob("edgeq-run.*"))

    def phone_tmp_runs(self) -> list[Path]:
        return sorted((PHONE.root / "data/local/tmp").glob("edgeq-run.*"))


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if not is_root():
        pytest.skip("device lab needs root (network namespaces, binfmt_misc, chroot): run as root, as CI does")
    missing = [t for t in ("mmdebstrap", "adb", "ssh", "ip", "unshare", "dpkg-deb") if not _which(t)]
    if missing:
        pytest.skip(f"device lab needs {', '.join(missing)} (see .ci/run for the apt-get line)")
    port = _free_port()
    old_port = os.environ.get("ANDROID_ADB_SERVER_PORT")
    os.environ["ANDROID_ADB_SERVER_PORT"] = str(port)  # our own adb server, ended at teardown
    lab = DeviceLab()
    t0 = time.monotonic()
    try:
        lab.up()
        keys = tmp_path_factory.mktemp("keys")
        known = keys / "known_hosts"
        host_key = (build.KEYS / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known.write_text(f"{PI.addr} {' '.join(host_key)}\n")
        yield Lab(lab, f"ssh://pi@{PI.addr}", f"adb:{PHONE.addr}:{PHONE.port}",
                  ["--ssh-identity", str(build.KEYS / "id_ed25519"), "--known-hosts", str(known)], keys,
                  time.monotonic() - t0)
    finally:
        subprocess.run(["adb", "-P", str(port), "kill-server"], capture_output=True, timeout=30)
        lab.down()
        if old_port is None:
            os.environ.pop("ANDROID_ADB_SERVER_PORT", None)
        else:
            os.environ["ANDROID_ADB_SERVER_PORT"] = old_port


def _which(tool: str) -> bool:
    import shutil

    return shutil.which(tool) is not None


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, cnn) -> dict[str, Path]:
    """fashion_cnn as fp32, fp16 and int8 .tflite, converted once per session."""
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    d = tmp_path_factory.mktemp("device_models")
    out = {}
    for mode in (Mode.FP32, Mode.FP16, Mode.INT8):
        path = d / f"cnn_{mode.value}.tflite"
        convert(cnn.keras, ConvertOptions(mode=mode, calib=cnn.calib, calib_samples=64), out=path)
        out[mode.value] = path
    return out
