"""Does EfficientNet-Lite's full-INT8 gap shrink with more calibration data? (docs/ptq.md)

The zoo calibrates on 48 crops (6 per calibration photo). This script cuts ``--per-photo`` crops of the same
8 calibration photos (another seed for each size, so the sets differ), converts with ``--ptq`` and scores on the
zoo's eval split, as bench_ptq does:
    python -m benchmarks.ptq_diagnosis.calib_size efficientnet_lite0 --per-photo 6 12 24 --ptq auto
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def write_calib(z, rgb: np.ndarray, path: Path) -> Path:
    """The uint8 RGB crops ``rgb`` (NHWC) normalized for ``z`` as an edgeq calibration file at ``path``."""
    from benchmarks.zoo import data

    x = data.normalize(rgb, z.preprocessing).astype(np.float32).transpose(0, 3, 1, 2)  # the ONNX input: NCHW
    np.savez(path, **{z.inputs[0].name: x})
    return path


def convert_scored(z, cache: Path, rgb: np.ndarray, ptq: str, work: Path, tag: str) -> tuple[float, float, float]:
    """Calibrate ``z`` to full INT8 on the uint8 RGB crops ``rgb`` (NHWC) with ``--ptq ptq`` and score it on the
    zoo's eval split, as bench_ptq does: (agreement, SQNR dB, seconds)."""
    from benchmarks.zoo import data
    from edgeq.api import convert
    from edgeq.modes import ConvertOptions, Mode, PtqChoice

    calib = write_calib(z, rgb, work / f"calib_{tag}.npz")
    t = time.perf_counter()
    r = convert(z.path(cache), ConvertOptions(mode=Mode.INT8, calib=calib, ptq=PtqChoice(ptq)),
                out=work / f"int8_{tag}.tflite", eval_data=data.ready_dir(z, cache) / "eval_edgeq.npz",
                input_shapes=dict(z.input_shapes))
    v = r.accuracy.vs_float
    return v.agreement, v.sqnr_db, time.perf_counter() - t


def main() -> None:
    from benchmarks.zoo import data, manifest

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model with photo data, e.g. efficientnet_lite0")
    ap.add_argument("--per-photo", type=int, nargs="+", default=[6, 12, 24])
    ap.add_argument("--ptq", default="auto")
    a = ap.parse_args()
    cache = manifest.cache_dir()
    z = manifest.load().model(a.model)
    _, _, h, w = z.inputs[0].shape
    work = Path(tempfile.mkdtemp(prefix="calib_size-"))
    for per in a.per_photo:
        rgb = data.photo_crops(cache, data.CALIB_PHOTOS, per, (h, w), data.SEED + 100 + per)
        agreement, sqnr, secs = convert_scored(z, cache, rgb, a.ptq, work, str(per))
        print(f"{a.model} ptq={a.ptq} calib={len(rgb)} crops ({per}/photo): agreement {agreement:.3f}, "
              f"SQNR {sqnr:.2f} dB, {secs:.0f} s", flush=True)


if __name__ == "__main__":
    main()
