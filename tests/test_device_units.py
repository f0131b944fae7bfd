"""Device benchmarking without devices: target parsing, benchmark_model flags, quoting, board conditions,
and how adb/ssh client failures become one-line errors (fake clients). Runs everywhere, no root needed."""
from __future__ import annotations

import shlex
import stat
from pathlib import Path

import numpy as np
import pytest

from edgeq.bench.device_flow import (FlowOptions, _own_pattern, benchmark_model_flags, board_conditions,
                                     runner_result)
from edgeq.bench.devices import DeviceBenchOptions, device_notes, is_device_target, run_target
from edgeq.bench.errors import TargetError
from edgeq.transport.adb import AdbRemote
from edgeq.transport.errors import DeviceLost, DeviceMissing, DeviceUnauthorized, HostKeyError
from edgeq.transport.ssh import SshOptions, SshRemote, parse_ssh_target


def test_ssh_targets_parse_and_bad_ones_are_one_line():
    a = parse_ssh_target("ssh://pi@raspberrypi.local:2222")
    assert (a.user, a.host, a.port) == ("pi", "raspberrypi.local", 2222)
    assert parse_ssh_target("ssh://[fe80::1]").host == "fe80::1"
    with pytest.raises(TargetError, match="ssh://"):
        parse_ssh_target("ssh://pi@host;rm -rf /")
    assert is_device_target("adb") and is_device_target("adb:R58M") and is_device_target("ssh://b")
    assert not is_device_target("rpi4")


def test_benchmark_model_flags_per_delegate():
    o = FlowOptions(runs=7, warmup=2, op_profile=True)
    f = benchmark_model_flags("/data/local/tmp/x/m0.tflite", 4, o)
    assert f[:4] == ["--graph=/data/local/tmp/x/m0.tflite", "--num_threads=4", "--warmup_runs=2", "--num_runs=7"]
    assert "--use_xnnpack=true" in f and "--enable_op_profiling=true" in f
    assert "--use_xnnpack=false" in benchmark_model_flags("g", 1, FlowOptions(delegate="none"))
    assert "--use_gpu=true" in benchmark_model_flags("g", 1, FlowOptions(delegate="gpu"))
    ext = benchmark_model_flags("g", 1, FlowOptions(delegate="external:/data/local/tmp/libQnnTFLiteDelegate.so",
                                                    delegate_options={"backend_type": "htp"}))
    assert "--external_delegate_path=/data/local/tmp/libQnnTFLiteDelegate.so" in ext
    assert "--external_delegate_options=backend_type:htp" in ext


def test_cleanup_pattern_never_matches_its_own_shell():
    import re

    path = "/tmp/edgeq-run.aB3xZ9"
    pat = _own_pattern(path)
    assert re.search(pat, f"python3 {path}/edgeq_runner.py --model {path}/m0.tflite")
    cleanup = f"pkill -f {shlex.quote(pat)}; rm -rf {shlex.quote(path[:-1])}[{path[-1]}]"
    assert not re.search(pat, cleanup)


def test_board_conditions_warn_on_throttling_and_say_unknown():
    assert board_conditions({}) == {"temp_c": "unknown", "freq_mhz": "unknown"}
    hot = board_conditions({"temps_c": [62.0, 81.5], "min_freqs_mhz": [1800.0, 1200.0], "throttled": "0x20002",
                            "device": {"max_freq_mhz": "1800", "governor": "performance"}})
    assert hot["temp_c"] == "62.0->81.5 (max)" and hot["freq_mhz"] == "1200..1800"
    assert "0x20002" in hot["throttling"] and "81.5 C" in hot["throttling"] and "1200 MHz" in hot["throttling"]
    cool = board_conditions({"temps_c": [45.0], "throttled": "0x0"})
    assert "throttling" not in cool


def test_runner_result_maps_samples_and_errors():
    r = runner_result({"threads": 2, "init_ms": 3.0, "first_inference_ms": 9.0, "warmup_ms": [9.0],
                       "runs_ms": [1.0, 2.0, 3.0], "peak_memory_mb": 50.0, "device": {"board": "unknown"},
                       "delegation": [{"delegate": "TfLiteXNNPackDelegate", "nodes_delegated": 8,
                                       "nodes_total": 9, "partitions": 1, "not_delegated": ["SOFTMAX"]}]},
                      Path("m.tflite"), "ssh://pi@b", "xnnpack")
    assert r.ok and r.inference.count == 3 and r.inference.p50_ms == 2.0 and r.threads == 2
    assert r.partially_delegated and r.device["board"] == "unknown"
    bad = runner_result({"error": "ValueError: Model provided has model identifier 'abcd'"}, Path("m.tflite"),
                        "ssh://pi@b", "xnnpack")
    assert not bad.ok and bad.error.startswith("ssh://pi@b: m.tflite: ValueError")


def test_device_notes_list_mismatches_and_throttling():
    from edgeq.bench.result import BenchResult

    r = BenchResult(model="/x/m.tflite", target="rpi4", device={"throttling": "CPU reached 85 C",
                                                               "outputs_match": "NO", "outputs_max_abs_diff": "0.5",
                                                               "outputs_tolerance": "0.0001"})
    notes = device_notes([r, r])
    assert notes == ["WARNING throttling on rpi4: CPU reached 85 C",
                     "rpi4 m.tflite: outputs vs host max |diff| 0.5 (tolerance 0.0001): MISMATCH"]


def _fake(tmp_path: Path, name: str, script: str) -> Path:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + script)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return p


@pytest.mark.parametrize("stderr,exc,needle", [
    ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.", HostKeyError,
     "host key differs"),
    ("No ED25519 host key is known for b and you have requested strict checking.\nHost key verification failed.",
     HostKeyError, "--accept-new-host-key"),
    ("pi@b: Permission denied (publickey).", DeviceUnauthorized, "refused our keys"),
    ("ssh: connect to host b port 22: Connection refused", DeviceMissing, "nothing accepts ssh connections on b "
                                                                           "port 22"),
    ("ssh: Could not resolve hostname b: Name or service not known", DeviceMissing, "host name 'b' does not resolve"),
    ("Connection timed out during banner exchange", DeviceMissing, "no answer from b port 22 within 10 s"),
    ("ssh: connect to host b port 22: No route to host", DeviceMissing, "not reachable from here"),
    ("", DeviceLost, "connection lost during 'true': ssh exited 255 without saying why; run 'ssh -v b true'"),
    ("Connection to b closed by remote host.", DeviceLost, "connection lost"),
])
def test_ssh_failures_become_one_line_device_errors(tmp_path, stderr, exc, needle):
    fake = _fake(tmp_path, "ssh", f"cat >&2 <<'E'\n{stderr}\nE\nexit 255\n")
    remote = SshRemote(parse_ssh_target("ssh://pi@b"), SshOptions(ssh=str(fake)))
    with pytest.raises(exc, match=needle) as info:
        remote.run("true")
    assert "\n" not in str(info.value) and "ssh://pi@b" in str(info.value)
    remote.close()


def test_ssh_command_line_has_no_secrets_and_checks_keys(tmp_path):
    log = tmp_path / "argv"
    fake = _fake(tmp_path, "ssh", f'printf "%s\\n" "$@" > {log}\n')
    remote = SshRemote(parse_ssh_target("ssh://pi@b:2200"), SshOptions(ssh=str(fake), identity=Path("/k")))
    remote.run("ls " + shlex.quote("/tmp/a b;$(x)"))
    argv = log.read_text().splitlines()
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv and argv[-1] == "ls '/tmp/a b;$(x)'"
    assert argv[argv.index("-p") + 1] == "2200" and argv[argv.index("-i") + 1] == "/k"
    remote.close()


@pytest.mark.parametrize("out,exc,needle", [
    ("error: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set", DeviceUnauthorized,
     "Allow USB debugging"),
    ("error: device 'R58M' not found", DeviceMissing, "not found"),
    ("error: device offline", DeviceLost, "offline"),
])
def test_adb_states_become_one_line_device_errors(tmp_path, monkeypatch, out, exc, needle):
    fake = _fake(tmp_path, "adb", f"echo \"{out}\" >&2\nexit 1\n")
    monkeypatch.setenv("EDGEQ_ADB", str(fake))
    with pytest.raises(exc, match=needle):
        AdbRemote("R58M").connect()


def test_adb_server_edgeq_started_is_stopped_and_a_users_server_is_not(tmp_path, monkeypatch):
    log = tmp_path / "calls"
    started = tmp_path / "started"
    # a fake adb whose first call starts "the server", as the real client says on stderr
    fake = _fake(tmp_path, "adb", f'echo "$@" >> {log}\n'
                                  f'if [ ! -e {started} ]; then touch {started}; '
                                  'echo "* daemon started successfully" >&2; fi\n'
                                  'case "$*" in *get-state*) echo device;; esac\n')
    monkeypatch.setenv("EDGEQ_ADB", str(fake))
    from edgeq.transport import adb

    # earlier tests' remotes failed in connect() and were never closed: start from a clean count
    monkeypatch.setattr(adb, "_SERVER", {"started_by_us": False, "open": 0})
    remote = AdbRemote("R58M")
    remote.connect()
    remote.close()
    assert log.read_text().splitlines()[-1] == "kill-server"
    log.write_text("")  # now the server was already running (the user's): it stays
    remote = AdbRemote("R58M")
    remote.connect()
    remote.close()
    assert "kill-server" not in log.read_text()


def test_connect_timeout_follows_timeout_and_is_at_most_10_s():
    from edgeq.bench.devices import open_remote

    def connect_timeout(timeout_s):
        return open_remote("ssh://pi@b", SshOptions(), timeout_s)._argv("true")
    assert "ConnectTimeout=3" in connect_timeout(3.0)
    assert "ConnectTimeout=10" in connect_timeout(600.0)
    assert open_remote("adb:R58M", SshOptions(), 4.0).connect_timeout == 4


def test_unreachable_target_gives_failed_results_not_an_exception(tmp_path, monkeypatch):
    fake = _fake(tmp_path, "adb", "echo \"error: device 'R58M' not found\" >&2\nexit 1\n")
    monkeypatch.setenv("EDGEQ_ADB", str(fake))
    rs = run_target("adb:R58M", [Path("a.tflite"), Path("b.tflite")],
                    DeviceBenchOptions(threads=(1, 2), benchmark_binary="/data/local/tmp/benchmark_model"))
    assert len(rs) == 4 and all(not r.ok and r.error.startswith("adb:R58M: device not found") for r in rs)


def test_output_check_tolerances(tmp_path, sin_model):
    from edgeq.bench.output_check import compare, host_outputs, make_inputs
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    model = tmp_path / "sin.tflite"
    convert(sin_model, ConvertOptions(mode=Mode.FP32), out=model)
    inputs = make_inputs(model, tmp_path / "in.npz")
    ref = host_outputs(model, inputs)
    assert compare(model, ref, {k: v.copy() for k, v in ref.items()}).ok
    off = {k: v + np.float32(0.5) for k, v in ref.items()}
    check = compare(model, ref, off)
    assert not check.ok and abs(check.max_abs_diff - 0.5) < 1e-6 and check.as_facts()["outputs_match"] == "NO"
