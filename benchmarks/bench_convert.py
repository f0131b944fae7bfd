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
from edgeq.modes import PtqChoice

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["fashion_cnn", "fashion_mobilenet"]
# (label, mode, ptq): int8 appears twice, as edgeq makes it by default and as the plain converter does.
MODES = [("fp32", Mode.FP32, None), ("fp16", Mode.FP16, None), ("dynamic", Mode.DYNAMIC, None),
         ("int8", Mode.INT8, PtqChoice.AUTO), ("int8 --ptq plain", Mode.INT8, PtqChoice.PLAIN),
         ("int8-fallback", Mode.INT8_FALLBACK, None), ("int16x8", Mode.INT16X8, None)]

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
                 "--calib", str(sample / "calib.npz"), "--out", str(work / "edgeq.tflite"), "--no-progress",
                 "--ptq", "plain"]  # the converter's own settings; --ptq auto does more work by design
    plain_cmd = [sys.executable, str(script), str(sample / "model.keras"), str(sample / "calib.npz"),
                 str(work / "plain.tflite")]
    e, p = [], []
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        p.append(_timed(plain_cmd))
        e.append(_timed(edgeq_cmd))
    return {"edgeq_s": round(statistics.median(e), 2), "plain_s": round(statistics.median(p), 2),
            "ratio": round(statistics.median(e) / statistics.median(p), 3), "runs": repeats}


def reference_mobilenet_v2_sizes(work: Path) -> dict:
    """Sizes only, on Keras' MobileNetV2 1.0/224 architecture (random weights: pretrained ones cannot be
    downloaded here, and file size does not depend on weight values): how the FP32/INT8/FP16 ratios look
    on a real-sized MobileNet, where fixed per-channel metadata weighs less than on the small samples."""
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    model.save(work / "mobilenet_v2_random.keras")
    np.savez(work / "calib_random.npz", x=np.random.default_rng(0).uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32))
    sizes = {}
    for mode in (Mode.FP16, Mode.INT8):
        r = convert(work / "mobilenet_v2_random.keras",  # plain: size only, graph preparation would not change it
                    ConvertOptions(mode=mode, calib=work / "calib_random.npz", ptq=PtqChoice.PLAIN),
                    out=work / f"mobilenet_v2_{mode.suffix}.tflite")
        sizes["fp32"] = r.float_size_bytes
        sizes[mode.value] = r.size_bytes
        sizes[f"{mode.value}_ratio"] = round(r.size_ratio, 3)
        sizes[f"{mode.value}_metadata_bytes"] = r.model.size_by_group.get("graph and metadata")
    sizes["params"] = int(model.count_params())
    return sizes


def run(work: Path) -> dict:
    results: dict = {"samples": {}}
    rows = []
    for name in SAMPLES:
        sample = ROOT / "sample_models" / name
        per_mode = {}
        for label, mode, ptq in MODES:
            options = ConvertOptions(mode=mode, calib=sample / "calib.npz", **({"ptq": ptq} if ptq else {}))
            r = convert(sample / "model.keras", options, out=work / f"{name}_{label.replace(' ', '_')}.tflite",
                        eval_data=sample / "eval.npz")
            d = r.to_dict()
            per_mode[label] = {k: d[k] for k in ("size_bytes", "size_ratio", "tensors_by_dtype", "fully_integer",
                                                      "quantized_weights", "accuracy")}
            a = r.accuracy
            rows.append(f"| {name} | {label} | {r.size_bytes / 1024:.1f} | {r.size_ratio:.3f} | "
                        f"{100 * a.top1:.2f} | {a.drop_points:+.2f} | {100 * a.vs_float.agreement:.2f} | "
                        f"{'yes' if r.model.fully_integer else 'no'} |")
        per_mode["wall_time_int8"] = wall_time(sample, work)
        results["samples"][name] = per_mode
    mnv2 = results["mobilenet_v2_224_sizes"] = reference_mobilenet_v2_sizes(work)
    wt = "\n".join(f"| {n} | {v['wall_time_int8']['edgeq_s']} | {v['wall_time_int8']['plain_s']} | "
                   f"{v['wall_time_int8']['ratio']} |" for n, v in results["samples"].items())
    results["markdown"] = (
        "## Converter core (`edgeq convert`)\n\n"
        "Every mode on every Keras sample; top-1 on the sample's 2,000 held-out test images (calibration on 300 "
        "training images).\n\n"
        "| sample | mode | size KiB | x FP32 | top-1 % | drop pt | agreement % | integer-only |\n"
        "|---|---|---:|---:|---:|---:|---:|---|\n" + "\n".join(rows) +
        "\n\nWall time of a full-INT8 conversion, whole process (Python + TensorFlow start-up included), "
        "median of 3 interleaved runs: `edgeq convert --ptq plain` (which also makes the FP32 size reference and "
        "checks the result is integer-only) against a plain script calling `TFLiteConverter.from_keras_model` with the same "
        "settings.\n\n| sample | edgeq s | plain TFLiteConverter s | ratio |\n|---|---:|---:|---:|\n" + wt + "\n"
        f"\nSize reference at real MobileNet scale (Keras MobileNetV2 1.0/224, {mnv2['params']:,} parameters, "
        f"random weights, size only): FP32 {mnv2['fp32'] / 2**20:.2f} MiB, FP16 {mnv2['fp16_ratio']} x, "
        f"full-INT8 per-channel {mnv2['int8_ratio']} x (of which {mnv2['int8_metadata_bytes'] / 1024:.0f} KiB is "
        "graph, names and per-channel scales/zero points).\n")
    return results
