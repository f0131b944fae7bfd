"""``python -m tests.devicelab up|down|status|fetch``: bring the stand-ins up for a person to try, remove them,
or (``fetch``, CI's install step) only download the bookworm-backports packages into .devicelab/."""
from __future__ import annotations

import sys
import time

from tests.devicelab import build
from tests.devicelab.lab import PHONE, PI, DeviceLab, LabState, is_root


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "status"
    if what not in ("up", "down", "status", "fetch"):
        print("usage: python -m tests.devicelab up|down|status|fetch", file=sys.stderr)
        return 2
    if what == "status":
        print(LabState.load())
        return 0
    if not is_root():
        print("devicelab: needs root (network namespaces, binfmt_misc, chroot)", file=sys.stderr)
        return 2
    if what == "fetch":
        build.LAB.mkdir(parents=True, exist_ok=True)
        print(f"devicelab: backports packages in {build.fetch_backports()}")
        return 0
    lab = DeviceLab()
    if what == "down":
        lab.down()
        print("devicelab: down (daemons stopped, namespaces and binfmt entry removed)")
        return 0
    t0 = time.monotonic()
    lab.up()
    key = build.KEYS / "id_ed25519"
    known = build.KEYS / "known_hosts"
    known.write_text(f"{PI.addr} " + " ".join((build.KEYS / "ssh_host_ed25519_key.pub").read_text().split()[:2]) + "\n")
    print(f"devicelab: up in {time.monotonic() - t0:.0f} s (stand-ins under qemu: latency is meaningless)\n"
          f"  Raspberry Pi stand-in: ssh -i {key} -o UserKnownHostsFile={known} pi@{PI.addr} uname -m\n"
          f"  phone stand-in:        adb connect {PHONE.addr}:{PHONE.port} && adb -s {PHONE.addr}:{PHONE.port} shell getprop\n"
          f"  edgeq bench MODEL.tflite --target ssh://pi@{PI.addr} --ssh-identity {key} --known-hosts {known}\n"
          f"  edgeq bench MODEL.tflite --target adb:{PHONE.addr}:{PHONE.port} "
          f"--benchmark-binary tests/devicelab/benchmark_model_standin.py\n"
          "  make devicelab-down   # stops exactly these daemons, removes namespaces and the binfmt entry")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
