"""The wheel, installed outside the repo, runs README's commands: profiles, version and CLI come with it.

Built from a copy of the sources (no build/ or egg-info litter in the checkout), installed with
``--no-deps --no-index`` into a fresh venv that sees this environment's locked dependencies through a .pth
file (no network, seconds instead of a full TensorFlow install), and run from a temporary folder with
PYTHONPATH cleared, so nothing can come from the checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CNN = ROOT / "sample_models" / "fashion_cnn"
TORCH = ROOT / "sample_models" / "fashion_torch"

pytestmark = [pytest.mark.slow, pytest.mark.wheel]


def _run(cmd: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict, Path]:
    """(venv bin folder, environment, a work folder outside the repo) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "edgeq", src / "edgeq", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp / "dist", src], tmp, env)
    wheels = list((tmp / "dist").glob("edgeq-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", venv], tmp, env)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env).stdout.strip())
    # The locked dependencies of this environment, after the venv's own site-packages (where edgeq goes).
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_locked_deps.pth").write_text("\n".join(paths) + "\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "-q",
          f"{wheels[0]}[onnx,plot]"], tmp, env)
    work = tmp / "work"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return venv / "bin", env, work


def test_installed_package_is_the_wheel_with_its_data(installed):
    bindir, env, work = installed
    code = ("import edgeq, edgeq.targets as t, importlib.metadata as m; "
            "print(edgeq.__file__); print(m.version('edgeq')); print(sorted(t.known_targets())); "
            "print(sorted(r for r in m.requires('edgeq') if 'extra ==' in r))")
    out = _run([bindir / "python", "-c", code], work, env).stdout.splitlines()
    assert out[0].startswith(str(bindir.parent)) and "site-packages" in out[0], out[0]
    import edgeq

    assert out[1] == edgeq.__version__
    assert "host" in out[2] and "coral-edgetpu" in out[2]
    assert "onnx2tf" in out[3] and "matplotlib" in out[3]  # the [onnx] and [plot] extras are declared
    files = _run([bindir / "python", "-c", "import importlib.metadata as m; print('\\n'.join(str(f) for f in "
                                           "m.files('edgeq')))"], work, env).stdout.split()
    assert "edgeq/py.typed" in files and "edgeq/profiles/rpi5.toml" in files


def test_readme_commands_from_another_folder(installed):
    bindir, env, work = installed
    edgeq = bindir / "edgeq"
    assert _run([edgeq, "--version"], work, env).stdout.strip().startswith("edgeq ")
    listing = _run([edgeq, "targets", "list"], work, env).stdout
    assert "host" in listing and "rpi5" in listing
    assert "transport      local" in _run([edgeq, "targets", "show", "host"], work, env).stdout
    _run([edgeq, "convert", CNN / "model.keras", "--mode", "fp16", "--out", "cnn_fp16.tflite"], work, env)
    rep = json.loads(_run([edgeq, "convert", CNN / "model.keras", "--mode", "int8", "--ptq", "plain",
                           "--calib", CNN / "calib.npz", "--calib-samples", "100", "--eval", CNN / "eval.npz",
                           "--out", "cnn_int8.tflite", "--json"], work, env).stdout)
    assert rep["schema"] == 1 and rep["fully_integer"] and rep["accuracy"]["top1"] > 0.85
    info = json.loads(_run([edgeq, "inspect", "cnn_int8.tflite", "--json"], work, env).stdout)
    assert info["fully_integer"] and info["schema"] == 1
    ev = _run([edgeq, "eval", "cnn_int8.tflite", "--eval", CNN / "eval.npz", "--eval-samples", "200"], work, env)
    assert "top-1" in ev.stdout
    bench = json.loads(_run([edgeq, "bench", "cnn_fp16.tflite", "cnn_int8.tflite", "--target", "host",
                             "--runs", "5", "--warmup", "1", "--json"], work, env).stdout)
    assert [r["error"] for r in bench] == [None, None] and all(r["schema"] == 1 for r in bench)
    _run([edgeq, "convert", TORCH / "model.onnx", "--mode", "fp16", "--out", "torch_fp16.tflite"], work, env)
    assert {p.name for p in work.iterdir()} >= {"cnn_fp16.tflite", "cnn_int8.tflite", "torch_fp16.tflite"}


def test_readme_library_example_from_another_folder(installed):
    bindir, env, work = installed
    code = f"""
import numpy as np
from edgeq import convert, ConvertOptions, Mode
calib = np.load({str(CNN / 'calib.npz')!r})["x"][:64]
report = convert({str(CNN / 'model.keras')!r}, ConvertOptions(mode="int8", ptq="plain", calib=calib),
                 out="lib_int8.tflite", eval_data={str(CNN / 'eval.npz')!r})
print(report.size_ratio < 0.3, report.accuracy.drop_points < 2, report.model.fully_integer)
"""
    assert _run([bindir / "python", "-c", code], work, env).stdout.split() == ["True", "True", "True"]
