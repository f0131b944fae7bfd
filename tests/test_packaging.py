"""Packaging promises: light imports, a CLI that starts with only core deps, one line per missing extra,
profiles as package data, one flag name per concept (old spellings kept as hidden aliases)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import one_line_error

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "numpy", "ai_edge_litert", "onnx", "onnx2tf", "matplotlib")
# Blocks imports of the named top-level packages, as if they were not installed, then runs the CLI.
BLOCKED_CLI = textwrap.dedent("""
    import importlib.abc, sys
    BLOCK = set(sys.argv[1].split(","))
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCK:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Block())
    from edgeq.cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


def _blocked(blocked: tuple[str, ...], *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", BLOCKED_CLI, ",".join(blocked), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_import_edgeq_bench_loads_no_tensorflow_and_no_converter():
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import edgeq.bench, edgeq.targets"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if "|" in line}
    assert "edgeq.bench" in loaded and "edgeq.targets" in loaded
    assert not {m for m in loaded if m.split(".")[0] in ("tensorflow", "keras", "numpy")}
    assert not {m for m in loaded if m.startswith(("edgeq.convert", "edgeq.quantize", "edgeq.sources.",
                                                   "edgeq.api", "edgeq.data"))}


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["convert", "--help"], ["eval", "--help"],
                                  ["targets", "list"], ["targets", "show", "coral-edgetpu"]])
def test_cli_starts_with_only_core_dependencies(args):
    res = _blocked(HEAVY, *args)
    assert res.returncode == 0, res.stderr
    if args == ["--version"]:
        import edgeq

        assert res.stdout.strip() == f"edgeq {edgeq.__version__}"


def test_every_command_help_has_examples():
    for cmd in (["convert"], ["eval"], ["inspect"], ["bench"], ["compare"], ["analyze"], ["targets", "list"],
                ["targets", "show"], ["qat", "finetune"]):
        res = _blocked(HEAVY, *cmd, "--help")
        assert res.returncode == 0 and "Examples" in res.stdout, cmd


def test_missing_extras_are_one_line_naming_what_to_install(tmp_path):
    onnx = _blocked(("onnx2tf",), "convert", ROOT / "sample_models" / "fashion_torch" / "model.onnx",
                    "--mode", "fp16", "--out", tmp_path / "m.tflite")
    assert onnx.returncode == 2 and onnx.stderr.strip().splitlines() == [
        "edgeq: error: ONNX input needs `pip install edgeq[onnx]` (Python package 'onnx2tf' is not installed)"]
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)
    litert = _blocked(("ai_edge_litert",), "inspect", model)
    assert litert.returncode == 2 and "needs `pip install ai-edge-litert`" in litert.stderr
    assert len(litert.stderr.strip().splitlines()) == 1 and "internal error" not in litert.stderr
    plot = _blocked(("matplotlib",), "analyze", ROOT / "sample_models" / "fashion_cnn" / "model.keras",
                    "--calib", ROOT / "sample_models" / "fashion_cnn" / "calib.npz", "--plot", tmp_path / "p.png")
    assert plot.returncode == 2 and "needs `pip install edgeq[plot]`" in plot.stderr


def test_profiles_are_package_data_and_targets_dir_adds_and_overrides(tmp_path, monkeypatch):
    from importlib.resources import files

    from edgeq.targets import known_targets, load_target

    assert (files("edgeq") / "profiles" / "host.toml").is_file()
    assert {"host", "rpi5", "coral-edgetpu"} <= set(known_targets())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "myboard.toml").write_text('transport = "ssh"\nprecision = "int8"\naddress = "pi@b"\n')
    (tmp_path / "b" / "host.toml").write_text('transport = "local"\nprecision = "fp16"\n')
    monkeypatch.setenv("EDGEQ_TARGETS_DIR", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert {"myboard", "host", "rpi4"} <= set(known_targets())
    assert load_target("myboard").address == "pi@b"
    assert load_target("host").precision.value == "fp16"  # the user's folder wins over the built-in


def test_library_messages_name_arguments_and_the_cli_names_flags():
    from edgeq.cli.main import as_flags

    msg = "`mode=int8` needs calibration data; give `calib=DATA` (or check `layout`)"
    assert as_flags(msg) == "--mode int8 needs calibration data; give --calib DATA (or check --layout)"
    assert as_flags("`eval_data=x.npz`: has no labels") == "--eval x.npz: has no labels"


def test_old_flag_spellings_still_work_and_warn_only_after_success(cli, cnn, tmp_path):
    model = tmp_path / "m.tflite"
    assert cli("convert", cnn.keras, "--mode", "fp32", "--out", model).code == 0
    old = cli("eval", model, "--data", cnn.eval, "--limit", 50, "--json")
    new = cli("eval", model, "--eval", cnn.eval, "--eval-samples", 50, "--json")
    assert old.code == new.code == 0 and old.out == new.out and '"samples": 50' in new.out
    assert "--data is deprecated" in old.err and "use --eval-samples" in old.err and new.err == ""
    assert cli("-q", "eval", model, "--data", cnn.eval, "--limit", 5).err == ""
    one_line_error(cli("eval", tmp_path / "missing.tflite", "--data", cnn.eval), "missing.tflite")
    res = cli("eval", model)
    assert res.code == 2 and "missing option --eval" in res.err


def test_json_outputs_carry_a_schema_version(cli):
    import json

    rows = json.loads(cli("targets", "list", "--json").out)
    assert rows and all(r["schema"] == 1 for r in rows)
    assert json.loads(cli("targets", "show", "host", "--json").out)["schema"] == 1


@pytest.mark.parametrize("words,cword,want", [("edgeq con", 1, "convert"), ("edgeq convert m.keras --mo", 3, "--mode"),
                                              ("edgeq bench m.tflite --target rp", 4, "rpi5"),
                                              ("edgeq targets show co", 3, "coral-edgetpu")])
def test_shell_completion_knows_commands_flags_and_targets(words, cword, want):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_EDGEQ_COMPLETE": "complete_bash", "COMP_WORDS": words,
           "COMP_CWORD": str(cword)}
    res = subprocess.run([sys.executable, "-c", "from edgeq.cli.main import run; run()"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert want in res.stdout.split(), (res.stdout, res.stderr)
