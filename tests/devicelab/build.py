"""Build the device lab's parts (cached under ``.devicelab/``): qemu 10, two arm64 root file systems, keys.

Nothing here emulates anything: mmdebstrap only extracts arm64 packages, pip fetches aarch64 wheels for the
host to unpack, and qemu-user 10 (bookworm-backports: bookworm's 7.2 segfaults in ai-edge-litert >= 2.2) is
unpacked with ``dpkg-deb``. Backports are read through a private sources.list whose mirror is the one this
machine's own apt sources use, so /etc/apt is never touched and no host name is hard-coded.
Every step leaves a stamp file; a second run only checks stamps (~0 s).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB = Path(os.environ.get("EDGEQ_DEVICELAB_DIR", REPO / ".devicelab"))
QEMU = LAB / "qemu" / "qemu-aarch64"
PI_ROOT = LAB / "pi-root"
PHONE_ROOT = LAB / "phone-root"
KEYS = LAB / "keys"
SITE = LAB / "site-aarch64"  # aarch64 wheels, bind-mounted into both roots at /opt/site
PI_CPU = "cortex-a72"  # Raspberry Pi 4
PHONE_CPU = "cortex-a76"  # a typical phone big core
LITERT_VERSION = "2.3.0"  # verified under qemu 10 (device_standins.md); a board may well differ from the host
BACKPORTS = ["qemu-user", "adbd:arm64", "android-libbase:arm64", "android-libcutils:arm64",
             "android-liblog:arm64", "android-libboringssl:arm64"]
BASE_PKGS = ["python3", "libstdc++6", "libgcc-s1", "coreutils", "dash", "util-linux", "procps", "findutils", "grep", "sed"]
PI_PKGS = BASE_PKGS + ["openssh-server", "openssh-sftp-server"]
# adbd 34's runtime libraries that live in bookworm itself (the android-* ones come from backports)
PHONE_PKGS = BASE_PKGS + ["libprotobuf32", "libbrotli1", "liblz4-1", "libzstd1", "libsystemd0"]

GETPROP = """#!/bin/sh
# getprop STAND-IN for the edgeq device lab: answers the properties edgeq reads from a real phone.
props='ro.product.model=edgeq phone stand-in (qemu aarch64)
ro.product.manufacturer=edgeq-devicelab
ro.product.cpu.abi=arm64-v8a
ro.build.version.sdk=34
ro.build.version.release=14
ro.board.platform=qemu-standin
ro.hardware=qemu'
if [ -z "$1" ]; then echo "$props" | sed 's/^\\([^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/'; exit 0; fi
echo "$props" | sed -n "s/^$1=//p"
"""


def log(msg: str) -> None:
    print(f"devicelab: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 or one-line sources)."""
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if p.is_file() and p.suffix in (".list", ".sources"):
            texts.append(p.read_text(errors="replace"))
    for text in texts:
        for m in re.finditer(r"^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            url = m.group(1)
            if "security" not in url and re.search(r"/debian/?$", url):
                return url.rstrip("/")
    raise RuntimeError("no Debian mirror found in /etc/apt/sources.list{,.d}")


def _apt_opts(d: Path) -> list[str]:
    return ["-o", f"Dir::Etc::SourceList={d / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={d / 'lists'}", "-o", f"Dir::Cache={d / 'cache'}",
            "-o", "APT::Architectures::=amd64", "-o", "APT::Architectures::=arm64", "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root"]


def fetch_backports() -> Path:
    """Download the bookworm-backports packages (qemu 10, adbd 34 and its android libs) into LAB/debs."""
    debs = LAB / "debs"
    stamp = debs / ".done"
    if stamp.exists():
        return debs
    apt = LAB / "apt"
    (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (apt / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    mirror = debian_mirror()
    key = "/usr/share/keyrings/debian-archive-keyring.gpg"
    (apt / "sources.list").write_text(f"deb [signed-by={key}] {mirror} bookworm-backports main\n"
                                      f"deb [signed-by={key}] {mirror} bookworm main\n")
    log(f"apt-get update (private lists, mirror {mirror}, bookworm + bookworm-backports)")
    run(["apt-get", *_apt_opts(apt), "-qq", "update"])
    debs.mkdir(parents=True, exist_ok=True)
    for f in debs.glob("*.deb"):
        f.unlink()
    log("apt-get download " + " ".join(BACKPORTS))
    run(["apt-get", *_apt_opts(apt), "-qq", "download", *[f"{p}/bookworm-backports" for p in BACKPORTS]],
        cwd=debs, stdout=subprocess.DEVNULL)
    stamp.touch()
    return debs


def build_qemu(debs: Path) -> Path:
    if QEMU.exists():
        return QEMU
    QEMU.parent.mkdir(parents=True, exist_ok=True)
    deb = next(debs.glob("qemu-user_*_amd64.deb"))
    # only the one static binary we need, not the 360 MB of every architecture
    tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    run(["tar", "-x", "-C", str(QEMU.parent), "--strip-components=3", "./usr/bin/qemu-aarch64"], stdin=tar.stdout)
    tar.wait()
    return QEMU


def build_site() -> Path:
    """The real aarch64 ai-edge-litert + numpy wheels, unpacked on the host by pip (no emulation)."""
    stamp = SITE / ".done"
    if stamp.exists():
        return SITE
    shutil.rmtree(SITE, ignore_errors=True)
    log(f"pip: aarch64 ai-edge-litert=={LITERT_VERSION} + numpy for CPython 3.11")
    plats = ["manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64"]
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
           "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
           "--target", str(SITE), f"ai-edge-litert=={LITERT_VERSION}", "numpy"]
    for p in plats:
        cmd[4:4] = ["--platform", p]
    run(cmd, env={k: v for k, v in os.environ.items() if not k.startswith("PIP_TARGET")})
    if precompile(SITE, "/opt/site"):
        (SITE / ".compiled").touch()
    stamp.touch()
    return SITE


def host_python311() -> str | None:
    """A CPython 3.11 on the host writes the same .pyc files as the roots' Debian python3.11, at native speed."""
    cands = [*sorted(Path.home().glob(".pyenv/versions/3.11*/bin/python3.11")), shutil.which("python3.11")]
    for c in cands:  # a pyenv shim may exist and still refuse to run: ask each one
        if c and subprocess.run([str(c), "-c", "import sys; assert sys.version_info[:2] == (3, 11)"],
                                capture_output=True).returncode == 0:
            return str(c)
    return None


def precompile(tree: Path, as_path: str) -> bool:
    """Byte-compile TREE for Python 3.11 as if it lived at AS_PATH (mmdebstrap's extract variant runs no
    postinst, so no .pyc exist, and the unprivileged board user cannot write them: every ``python3`` start
    would recompile numpy under emulation, ~15 s). Returns False when no host 3.11 is available."""
    py = host_python311()
    if not py:
        return False
    subprocess.run([py, "-m", "compileall", "-q", "-j", "0", "-s", str(tree), "-p", as_path, str(tree)],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return True


def _rootfs(root: Path, pkgs: list[str], mirror: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    log(f"mmdebstrap arm64 {root.name}: {' '.join(pkgs)}")
    run(["mmdebstrap", "--quiet", "--arch=arm64", "--variant=extract", "--include=" + ",".join(pkgs),
         "bookworm", str(root), mirror], stdout=subprocess.DEVNULL)
    for d in ("proc", "sys", "dev", "tmp", "run", "opt/site", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "usr/lib/python3/dist-packages").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/python3/dist-packages/edgeq-site.pth").write_text("/opt/site\n")
    if precompile(root / "usr/lib/python3.11", "/usr/lib/python3.11"):
        (root / ".compiled").touch()


def _accounts(root: Path, user: str | None) -> None:
    # Written by hand: nothing runs inside the root to create them. Password field '*' (not '!'):
    # sshd treats '!' as a locked account and refuses even key logins.
    passwd = ["root:x:0:0:root:/root:/bin/sh", "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin",
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"]
    group = ["root:x:0:", "nogroup:x:65534:"]
    shadow = ["root:*:19000:0:99999:7:::", "sshd:*:19000:0:99999:7:::", "nobody:*:19000:0:99999:7:::"]
    if user:
        passwd.append(f"{user}:x:1000:1000::/home/{user}:/bin/sh")
        group.append(f"{user}:x:1000:")
        shadow.append(f"{user}:*:19000:0:99999:7:::")
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    (root / "etc/group").write_text("\n".join(group) + "\n")
    (root / "etc/shadow").write_text("\n".join(shadow) + "\n")
    (root / "etc/shadow").chmod(0o640)


def build_keys() -> Path:
    if (KEYS / "id_ed25519").exists() and (KEYS / "ssh_host_ed25519_key").exists():
        return KEYS
    KEYS.mkdir(parents=True, exist_ok=True)
    for name, comment in (("id_ed25519", "edgeq-devicelab-user"), ("ssh_host_ed25519_key", "raspberrypi-standin"),
                          ("wrong_host_key", "not-the-pi")):
        f = KEYS / name
        for old in (f, f.with_name(name + ".pub")):
            old.unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(f)])
    return KEYS


def build_pi(mirror: str, address: str) -> Path:
    stamp = PI_ROOT / ".edgeq-built"
    if stamp.exists():
        return PI_ROOT
    _rootfs(PI_ROOT, PI_PKGS, mirror)
    _accounts(PI_ROOT, "pi")
    (PI_ROOT / "etc/hostname").write_text("raspberrypi\n")
    home = PI_ROOT / "home/pi"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    shutil.copy(KEYS / "id_ed25519.pub", home / ".ssh/authorized_keys")
    for p in (home, home / ".ssh", home / ".ssh/authorized_keys"):
        os.chown(p, 1000, 1000)
    (home / ".ssh").chmod(0o700)
    for suffix in ("", ".pub"):
        shutil.copy(KEYS / f"ssh_host_ed25519_key{suffix}", PI_ROOT / f"etc/ssh/ssh_host_ed25519_key{suffix}")
    (PI_ROOT / "etc/ssh/ssh_host_ed25519_key").chmod(0o600)
    (PI_ROOT / "run/sshd").mkdir(parents=True, exist_ok=True)
    (PI_ROOT / "etc/ssh/sshd_config.edgeq").write_text(
        f"ListenAddress {address}\nPort 22\nHostKey /etc/ssh/ssh_host_ed25519_key\nPidFile /run/sshd.edgeq.pid\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "AuthorizedKeysFile .ssh/authorized_keys\nSubsystem sftp /usr/lib/openssh/sftp-server\n"
        # qemu's default CPU ("max") has SVE/SME, which XNNPACK picks and qemu emulates ~10x slower; a Pi 4's
        # Cortex-A72 is also what the stand-in should report. Sessions get it through SetEnv.
        f"PrintMotd no\nLogLevel ERROR\nSetEnv QEMU_CPU={PI_CPU}\n")
    stamp.touch()
    return PI_ROOT


def build_phone(mirror: str, debs: Path) -> Path:
    stamp = PHONE_ROOT / ".edgeq-built"
    if stamp.exists():
        return PHONE_ROOT
    _rootfs(PHONE_ROOT, PHONE_PKGS, mirror)
    _accounts(PHONE_ROOT, None)
    for deb in sorted(debs.glob("*_arm64.deb")):  # adbd 34 + android libs from backports
        run(["dpkg-deb", "-x", str(deb), str(PHONE_ROOT)])
    tmp = PHONE_ROOT / "data/local/tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    tmp.chmod(0o1777)
    getprop = PHONE_ROOT / "usr/local/bin/getprop"
    getprop.parent.mkdir(parents=True, exist_ok=True)
    getprop.write_text(GETPROP)
    getprop.chmod(0o755)
    stamp.touch()
    return PHONE_ROOT


def build_all(pi_address: str) -> None:
    """Everything the lab needs on disk; cached, so a second call returns at once."""
    LAB.mkdir(parents=True, exist_ok=True)
    debs = fetch_backports()
    build_qemu(debs)
    build_site()
    build_keys()
    mirror = debian_mirror()
    build_pi(mirror, pi_address)
    build_phone(mirror, debs)
