"""End to end against the device lab (root only): `edgeq bench` on host + Raspberry Pi stand-in (real sshd) +
Android stand-in (real adbd, benchmark_model STAND-IN), faults, host keys, cleanup. Latency is not asserted:
the stand-ins run under qemu and their timings mean nothing."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.devicelab.fixtures import STANDIN, lab, tiny_models  # noqa: F401 - fixtures
from tests.devicelab.lab import PHONE, PI

pytestmark = pytest.mark.devicelab


def edgeq(*args, timeout=400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeq", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def phone_profile(tmp_path) -> str:
    """A target profile for the phone stand-in: its address and its benchmark_model (the STAND-IN)."""
    p = tmp_path / "phone-standin.toml"
    p.write_text(f'name = "phone-standin"\ntransport = "adb"\nprecision = "int8"\nthreads = 1\n'
                 f'address = "{PHONE.addr}:{PHONE.port}"\nbenchmark_binary = "{STANDIN}"\n'
                 f'[cpu]\nbig_core_mask = "1"\n')
    return str(p)


def test_one_bench_call_host_pi_phone_with_check_outputs(lab, tiny_models, tmp_path):
    out = tmp_path / "res"
    r = edgeq("bench", tiny_models["fp32"], tiny_models["int8"], "--target", "host", "--target", lab.pi,
              "--target", phone_profile(tmp_path), *lab.ssh_args, "--runs", 2, "--warmup", 1,
              "--check-outputs", "--cores", "big", "--out", out)
    assert r.returncode == 0, r.stderr
    head = r.stdout.splitlines()[0]
    for col in ("host p50 ms |", f"{lab.pi} p50 ms EMULATED", "phone-standin p50 ms EMULATED"):
        assert col in head
    assert "cnn_fp32" in r.stdout and "cnn_int8" in r.stdout
    matches = [ln for ln in r.stdout.splitlines() if "outputs vs host" in ln]
    assert len(matches) == 4 and all(ln.endswith(": match") for ln in matches), r.stdout
    res = json.loads((out / "bench.json").read_text())
    by_target = {}
    for x in res:
        by_target.setdefault(x["target"], []).append(x)
    assert set(by_target) == {"host", lab.pi, "phone-standin"}
    # both stand-ins are found to be qemu on this host's kernel; the host is not emulated
    assert all("qemu user-mode" in (x["emulated"] or "") for t in (lab.pi, "phone-standin") for x in by_target[t])
    assert all(x["emulated"] is None for x in by_target["host"])
    assert all(x["error"] is None and x["inference"]["count"] == 2 for x in res)
    pi, phone = by_target[lab.pi][0]["device"], by_target["phone-standin"][0]["device"]
    # board facts as the stand-in really has them: no device tree -> "unknown", never a made-up Pi model
    assert pi["board"] == "unknown" and pi["machine"] == "aarch64" and pi["cpu_parts"] == "0xd08"
    assert pi["runtime"].startswith("ai-edge-litert") and "temp_c" in pi and "governor" in pi
    assert phone["model"].startswith("edgeq phone stand-in") and phone["abi"] == "arm64-v8a"
    assert phone["sdk"] == "34"
    assert by_target["phone-standin"][0]["tool"] == "benchmark_model"
    assert by_target[lab.pi][0]["tool"] == "edgeq-device-runner"
    # int8 outputs are bit-exact on ARM here; fp32 within the tolerance
    int8 = [x for x in by_target[lab.pi] if "int8" in x["model"]][0]["device"]
    assert int8["outputs_max_steps"] == "0"
    assert lab.pi_tmp_runs() == [] and lab.phone_tmp_runs() == []  # run folders removed


def test_op_profile_with_benchmark_model_on_phone_and_board(lab, tiny_models):
    from edgeq.bench.host import bench_host

    [host] = bench_host([tiny_models["int8"]])
    host_cov = (host.delegation[0].nodes_delegated, host.delegation[0].nodes_total, host.delegation[0].partitions)
    r = edgeq("bench", tiny_models["int8"], "--target", lab.phone, "--target", lab.pi, *lab.ssh_args,
              "--benchmark-binary", STANDIN, "--op-profile", "--runs", 2, "--json")
    assert r.returncode == 0, r.stderr
    results = {x["target"]: x for x in json.loads(r.stdout)}
    for res in results.values():
        assert res["tool"] == "benchmark_model"
        rows = [row["node_type"] for row in res["op_profile"]]
        cov = res["delegation"][0]
        # the table and the coverage line agree: one row per XNNPACK partition, one per node left on the CPU
        assert rows.count("TfLiteXNNPackDelegate") == cov["partitions"] >= 1
        assert len(rows) - cov["partitions"] == cov["nodes_total"] - cov["nodes_delegated"] > 0
        assert "SOFTMAX" in rows  # XNNPACK takes no int8 SOFTMAX
        # the stand-in reads delegation from what its runtime allocated, edgeq's host runner walks the graph:
        # two methods, one answer
        assert (cov["nodes_delegated"], cov["nodes_total"], cov["partitions"]) == host_cov
    board = results[lab.pi]["device"]  # a board without Python facts still gets its facts from the shell
    assert board["board"] == "unknown" and board["cpu_parts"] == "0xd08" and board["temp_c"] == "unknown"
    assert lab.pi_tmp_runs() == [] and lab.phone_tmp_runs() == []


def test_op_profile_refused_without_benchmark_model(lab, tiny_models):
    r = edgeq("bench", tiny_models["int8"], "--target", lab.pi, *lab.ssh_args, "--op-profile")
    assert r.returncode == 2 and "--op-profile needs --benchmark-binary" in r.stderr


def test_wrong_unknown_and_accepted_host_keys(lab, tiny_models, tmp_path):
    from tests.devicelab import build

    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{PI.addr} " + " ".join((build.KEYS / "wrong_host_key.pub").read_text().split()[:2]) + "\n")
    ident = ["--ssh-identity", build.KEYS / "id_ed25519"]
    r = edgeq("bench", tiny_models["int8"], "--target", lab.pi, *ident, "--known-hosts", wrong)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln] == [
        ln for ln in r.stderr.splitlines() if ln and "host key differs" in ln and lab.pi in ln]
    # --accept-new-host-key never accepts a *changed* key
    r = edgeq("bench", tiny_models["int8"], "--target", lab.pi, *ident, "--known-hosts", wrong,
              "--accept-new-host-key")
    assert r.returncode == 2 and "host key differs" in r.stderr
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    r = edgeq("bench", tiny_models["int8"], "--target", lab.pi, *ident, "--known-hosts", empty)
    assert r.returncode == 2 and "--accept-new-host-key" in r.stderr
    from edgeq.transport.ssh import SshOptions, SshRemote, parse_ssh_target

    remote = SshRemote(parse_ssh_target(lab.pi), SshOptions(identity=build.KEYS / "id_ed25519",
                                                            known_hosts=empty, accept_new_host_key=True))
    try:
        remote.connect()
        assert remote.run("uname -m").out.strip() == "aarch64"
    finally:
        remote.close()
    found = subprocess.run(["ssh-keygen", "-F", PI.addr, "-f", str(empty)], capture_output=True, text=True)
    assert found.returncode == 0 and "ssh-ed25519" in found.stdout  # the new key was recorded (maybe hashed)


def test_missing_delegate_and_timeout_are_one_line_per_target(lab, tiny_models):
    r = edgeq("bench", tiny_models["int8"], "--target", lab.phone, "--target", lab.pi, *lab.ssh_args,
              "--benchmark-binary", STANDIN, "--delegate", "gpu", "--runs", 2)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln]
    assert len(err) == 2 and all("failed: no timing line" in ln and "no such hardware" in ln for ln in err), err
    r = edgeq("bench", tiny_models["fp32"], "--target", lab.pi, *lab.ssh_args, "--runs", 1000, "--timeout", 4)
    assert r.returncode == 2 and "did not finish within 4 s" in r.stderr and lab.pi in r.stderr
    assert lab.pi_tmp_runs() == []  # the runner still going on the board was ended and its folder removed


def test_missing_devices_are_reported_per_target(lab, tiny_models):
    r = edgeq("bench", tiny_models["int8"], "--target", "host", "--target", f"adb:{PHONE.addr}:5599",
              "--target", f"ssh://pi@{PI.addr}:2222", *lab.ssh_args, "--benchmark-binary", STANDIN, "--runs", 2)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln]
    assert any(f"adb:{PHONE.addr}:5599: cannot connect" in ln for ln in err), err
    assert any(f"ssh://pi@{PI.addr}:2222: nothing accepts ssh connections" in ln or  # the cause, named
               f"ssh://pi@{PI.addr}:2222: no answer" in ln for ln in err), err
    assert "cnn_int8" in r.stdout  # the host's result is kept and shown


def test_devices_disappearing_mid_run_keep_the_other_results(lab, tiny_models):
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", "bench", str(tiny_models["fp32"]), "--target", "host",
                             "--target", lab.pi, "--target", lab.phone, "--benchmark-binary", str(STANDIN),
                             *lab.ssh_args, "--runs", "400", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not (
                any((d / "benchmark_model").exists() for d in lab.pi_tmp_runs())
                and any((d / "benchmark_model").exists() for d in lab.phone_tmp_runs())):
            time.sleep(0.5)
        time.sleep(3)  # both are now running the model on the device
        assert proc.poll() is None
        lab.lab.stop(PI)  # the daemons (and everything they started) vanish mid-run
        lab.lab.stop(PHONE)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        lab.lab.start(PI)
        lab.lab.start(PHONE)
    assert proc.returncode == 2
    res = {x["target"]: x for x in json.loads(out)}
    assert res["host"]["error"] is None and res["host"]["inference"]["count"] == 400
    assert "connection lost" in res[lab.pi]["error"] and lab.pi in res[lab.pi]["error"]
    assert res[lab.phone]["error"].startswith(lab.phone)
    assert "Traceback" not in err
    for d in lab.pi_tmp_runs() + lab.phone_tmp_runs():  # the device died before edgeq could clean up
        subprocess.run(["rm", "-rf", str(d)], check=True)


def test_ctrl_c_removes_remote_run_folders(lab, tiny_models):
    from edgeq.bench.devices import DeviceBenchOptions, run_target, run_targets
    from edgeq.transport.ssh import SshOptions
    from tests.devicelab import build

    ssh = SshOptions(identity=build.KEYS / "id_ed25519", known_hosts=lab.keys / "known_hosts")
    # enough runs that the remote benchmark is still going when Ctrl-C lands, even on a loaded machine
    # (with 400 it sometimes finished first under load, and nothing was interrupted)
    o = DeviceBenchOptions(runs=20000, ssh=ssh)
    pressed, done = threading.Event(), threading.Event()

    def press_ctrl_c():
        end = time.monotonic() + 120
        while time.monotonic() < end and not done.is_set() and not any(
                (d / "edgeq_runner.py").exists() for d in lab.pi_tmp_runs()):
            time.sleep(0.3)
        if done.is_set():  # the run already ended: a late Ctrl-C would abort whichever test runs next
            return
        pressed.set()
        import _thread
        _thread.interrupt_main()

    # interrupt_main() does nothing while SIGINT is ignored, and a shell starts background jobs (`make test &`)
    # with SIGINT ignored: the test then waited out all 20000 runs. Python's own handler, as in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=press_ctrl_c, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_targets([(lab.pi, lambda: run_target(lab.pi, [tiny_models["fp32"]], o))])
    finally:
        done.set()
        signal.signal(signal.SIGINT, previous)
    assert pressed.is_set()
    assert lab.pi_tmp_runs() == []
