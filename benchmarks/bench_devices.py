"""One `edgeq bench` call: fp32/fp16/int8 fashion_cnn on the host, the Raspberry Pi stand-in (ssh, edgeq's
board runner) and the Android stand-in (adb, benchmark_model STAND-IN), with --check-outputs.

What this shows: the whole device path works and the aarch64 kernels' outputs match the host's within the
tolerance. What it does NOT show: device speed. The stand-ins run under qemu user-mode emulation (no real chip
was measured; the run records how much slower than this host they were), so their latency columns are
meaningless and must never be quoted as a phone or Pi number. Needs root (the device lab); without it the
section says so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# run as a subprocess / pushed to the stand-in, not imported
DEPENDS = ("edgeq/cli", "edgeq/bench", "edgeq/transport", "edgeq/targets.py", "tests/devicelab")


def _models(work: Path) -> dict[str, Path]:
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    sample = ROOT / "sample_models" / "fashion_cnn"
    out = {}
    for mode in (Mode.FP32, Mode.FP16, Mode.INT8):
        path = work / f"fashion_cnn_{mode.value}.tflite"
        convert(sample / "model.keras", ConvertOptions(mode=mode, calib=sample / "calib.npz"), out=path)
        out[mode.value] = path
    return out


def slowdown(results: list[dict]) -> dict:
    """Stand-in p50 / host p50 per model and target (how slow emulation was here; says nothing of real chips)."""
    host = {Path(r["model"]).name: r["inference"]["p50_ms"] for r in results
            if r["target"] == "host" and r["inference"].get("p50_ms")}
    ratios = {f"{r['target']} {Path(r['model']).name}": r["inference"]["p50_ms"] / host[Path(r["model"]).name]
              for r in results if r["target"] != "host" and r["inference"].get("p50_ms")
              and Path(r["model"]).name in host}
    return {"ratios": ratios, "min": min(ratios.values()), "max": max(ratios.values())}


def run(work: Path) -> dict:
    if os.geteuid() != 0:
        return {"needs": "root (the device lab)",
                "markdown": "## Devices (stand-ins)\n\nNot measured: needs root (the device lab).\n"}
    from tests.devicelab import build
    from tests.devicelab.lab import PHONE, PI, DeviceLab, LabState

    models = _models(work)
    already_up = bool(LabState.load().pids)
    cached = (build.PI_ROOT / ".edgeq-built").exists() and (build.PHONE_ROOT / ".edgeq-built").exists()
    lab = DeviceLab()
    t0 = time.monotonic()
    lab.up()
    lab_up_s = time.monotonic() - t0
    os.environ.setdefault("ANDROID_ADB_SERVER_PORT", "15137")
    try:
        known = work / "known_hosts"
        known.write_text(f"{PI.addr} " + " ".join((build.KEYS / "ssh_host_ed25519_key.pub").read_text().split()[:2])
                         + "\n")
        profile = work / "phone-standin.toml"
        standin = ROOT / "tests" / "devicelab" / "benchmark_model_standin.py"
        profile.write_text(f'name = "phone-standin"\ntransport = "adb"\nprecision = "int8"\nthreads = 1\n'
                           f'address = "{PHONE.addr}:{PHONE.port}"\nbenchmark_binary = "{standin}"\n')
        pi = f"ssh://pi@{PI.addr}"
        cmd = ["edgeq", "bench", *[str(m) for m in models.values()], "--target", "host", "--target", pi,
               "--target", str(profile), "--ssh-identity", str(build.KEYS / "id_ed25519"), "--known-hosts",
               str(known), "--runs", "20", "--warmup", "2", "--check-outputs", "--out", str(work / "out")]
        t0 = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "edgeq", *cmd[1:]], capture_output=True, text=True, timeout=1200)
        seconds = time.monotonic() - t0
    finally:
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)
        if not already_up:
            lab.down()
    if done.returncode != 0:
        raise RuntimeError(f"edgeq bench failed ({done.returncode}): {done.stderr[-2000:]}")
    results = json.loads((work / "out" / "bench.json").read_text())
    checks = [{"target": r["target"], "model": Path(r["model"]).name,
               "max_abs_diff": r["device"].get("outputs_max_abs_diff"),
               "max_steps": r["device"].get("outputs_max_steps"),
               "tolerance": r["device"].get("outputs_tolerance"), "match": r["device"].get("outputs_match")}
              for r in results if r["target"] != "host"]
    facts = {r["target"]: {k: r["device"].get(k) for k in ("board", "model", "cpu", "cpu_parts", "abi", "sdk",
                                                            "runtime", "governor", "temp_c")
                           if r["device"].get(k) is not None} for r in results}
    slow = slowdown(results)
    md = ["## Devices: one `edgeq bench` call on host + Raspberry Pi stand-in + Android stand-in", "",
          "`edgeq bench fashion_cnn_{fp32,fp16,int8}.tflite --target host --target ssh://pi@10.77.0.2 "
          "--target phone-standin.toml --check-outputs --runs 20` (the table is edgeq's own output):", "",
          done.stdout.split("\n\n`*`")[0].strip(), "",
          "**The two stand-in columns are NOT device speeds** (edgeq marks them EMULATED): both stand-ins are "
          "aarch64 userlands under qemu user-mode emulation; the phone's benchmark_model is a stand-in program. "
          f"In this run they were {slow['min']:.0f}-{slow['max']:.0f}x slower than this host per model (p50 ratio); "
          "no real chip was measured, so how they compare with one is unknown. They prove the adb/ssh paths, "
          "parsing and numerics, nothing about latency.", "",
          "aarch64 outputs vs host on the same inputs (`--check-outputs`):", "",
          "| target | model | max abs diff | max int8 steps | tolerance | match |", "|---|---|---|---|---|---|"]
    md += [f"| {c['target']} | {c['model']} | {c['max_abs_diff']} | {c['max_steps'] or '-'} | {c['tolerance']} | "
           f"{c['match']} |" for c in checks]
    how = "already up" if already_up else ("cached root file systems" if cached else
                                           "built from scratch: qemu 10, two arm64 roots, aarch64 wheels, keys")
    md += ["", f"Device lab up in {lab_up_s:.0f} s ({how}); the bench call took {seconds:.0f} s on 2 shared cores."]
    return {"command": " ".join(cmd), "table": done.stdout, "standin_slowdown_vs_host": slow, "checks": checks, "device_facts": facts,
            "lab_up_s": round(lab_up_s, 1), "lab_cached": cached, "bench_s": round(seconds, 1), "results": results,
            "markdown": "\n".join(md) + "\n"}
