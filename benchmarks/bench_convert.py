"""Converter core numbers: size and accuracy of every mode on every Keras sample, and edgeq's wall time
against a plain TFLiteConverter call with the same settings (both as fresh processes, median of 3)."""
from __future__ import annotations

import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from edgeq import ConvertOptions, Mode, convert

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["fashion_cnn", "fashion_mobilenet"]
MODES = [Mode.FP32, Mode.FP16, Mode.DYNAMIC, Mode.INT8, Mode.INT8_FALLBACK, Mode.INT16X8]

PLAIN = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf, keras
    model = keras.saving.load_model(sys.argv[1], compile=False)
    calib = np.load(sys.argv[2])["x"]
    def rep():
        for i in range(len(calib)):
            yield [calib[i:i + 1]]
    c = tf.lite.TFLiteConverter.from_keras_model(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.representative_dataset = rep
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = tf.int8
    c.inference_output_type = tf.int8
    open(sys.argv[3], "wb").write(c.convert())
""")


def _timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    return time.perf_counter() - t


def wall_time(sample: Path, work: Path, repeats: int = 3) -> dict:
    script = work / "plain_converter.py"
    script.write_text(PLAIN)
    edgeq_cmd = [sys.executable, "-m", "edgeq", "convert", str(sample / "model.keras"), "--mode", "int8",
                 "--calib", str(sample / "calib.npz"), "--out", str(work / "edgeq.tflite"), "--no-progress"]
    plain_cmd = [sys.executable, str(script), str(sample / "model.keras"), str(sample / "calib.npz"),
                 str(work / "plain.tflite")]
    e, p = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        p.append(_timed(plain_cmd))
        e.append(_timed(edgeq_cmd))
    return {"edgeq_s": round(statistics.median(e), 2), "plain_s": round(statistics.median(p), 2),
            "ratio": round(statistics.median(e) / statistics.median(p), 3), "runs": repeats}


def run(work: Path) -> dict:
    results: dict = {"samples": {}}
    rows = []
    for name in SAMPLES:
        sample = ROOT / "sample_models" / name
        per_mode = {}
        for mode in MODES:
            r = convert(sample / "model.keras", ConvertOptions(mode=mode, calib=sample / "calib.npz"),
                        out=work / f"{name}_{mode.suffix}.tflite", eval_data=sample / "eval.npz")
            d = r.to_dict()
            per_mode[mode.value] = {k: d[k] for k in ("size_bytes", "size_ratio", "tensors_by_dtype", "fully_integer",
                                                      "quantized_weights", "accuracy")}
            a = r.accuracy
            rows.append(f"| {name} | {mode.value} | {r.size_bytes / 1024:.1f} | {r.size_ratio:.3f} | "
                        f"{100 * a.top1:.2f} | {a.drop_points:+.2f} | {100 * a.vs_float.agreement:.2f} | "
                        f"{'yes' if r.model.fully_integer else 'no'} |")
        per_mode["wall_time_int8"] = wall_time(sample, work)
        results["samples"][name] = per_mode
    wt = "\n".join(f"| {n} | {v['wall_time_int8']['edgeq_s']} | {v['wall_time_int8']['plain_s']} | "
                   f"{v['wall_time_int8']['ratio']} |" for n, v in results["samples"].items())
    results["markdown"] = (
        "## Converter core (`edgeq convert`)\n\n"
        "Every mode on every Keras sample; top-1 on the sample's 2,000 held-out test images (calibration on 300 "
        "training images).\n\n"
        "| sample | mode | size KiB | x FP32 | top-1 % | drop pt | agreement % | integer-only |\n"
        "|---|---|---:|---:|---:|---:|---:|---|\n" + "\n".join(rows) +
        "\n\nWall time of a full-INT8 conversion, whole process (Python + TensorFlow start-up included), "
        "median of 3 interleaved runs: `edgeq convert` (which also makes the FP32 size reference and checks the "
        "result is integer-only) against a plain script calling `TFLiteConverter.from_keras_model` with the same "
        "settings.\n\n| sample | edgeq s | plain TFLiteConverter s | ratio |\n|---|---:|---:|---:|\n" + wt + "\n")
    return results
