"""ONNX input: edgeq's INT8 against onnxruntime float and against onnx2tf's own ``-oiqt`` INT8 (same
calibration images) on two PyTorch-exported classifiers, float TFLite vs onnxruntime error, and
transformer encoders in fp16/dynamic/int8/int16x8.

The classifiers are ``sample_models/fashion_torch`` (small CNN) and ``sample_models/fashion_mnv3``
(MobileNetV3-small style); their side by side, including the repeat over several calibration sets, is
in ``benchmarks/onnx_classifiers.py``. The real sentence encoder all-MiniLM-L6-v2 is used when its ONNX
export exists (``EDGEQ_MINILM_ONNX`` or ``benchmarks/work/onnx/minilm/model.onnx``, made by
``sample_models/build_onnx.py --minilm PATH`` in a venv with torch); otherwise its rows say so.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks import onnx_classifiers as clf
from edgeq import Mode

ROOT = Path(__file__).resolve().parents[1]
ENCODER = ROOT / "sample_models" / "tiny_encoder"
_edgeq = clf.edgeq_run


def _minilm_path() -> Path:
    return Path(os.environ.get("EDGEQ_MINILM_ONNX", ROOT / "benchmarks" / "work" / "onnx" / "minilm" / "model.onnx"))


def encoders(work: Path) -> dict:
    res = {}
    cases = [("tiny_encoder", ENCODER / "model.onnx", ENCODER / "calib.npz", ENCODER / "eval.npz", 16)]
    mini = _minilm_path()
    if mini.exists():
        cases.append(("all-MiniLM-L6-v2", mini, mini.with_name(f"{mini.stem}_calib.npz"),
                      mini.with_name(f"{mini.stem}_eval.npz"), 64))
    else:
        res["all-MiniLM-L6-v2"] = {"skipped": f"{mini} not found; build it with sample_models/build_onnx.py --minilm"}
    for name, model, calib, evald, seq in cases:
        shapes = {"input_ids": (1, seq), "attention_mask": (1, seq)}
        res[name] = {}
        for mode in (Mode.FP32, Mode.FP16, Mode.DYNAMIC, Mode.INT8, Mode.INT16X8):
            try:
                res[name][mode.value] = _edgeq(model, mode, work / f"{name}_{mode.value}.tflite",
                                               calib if mode.needs_calibration else None, evald, shapes)
            except Exception as exc:  # noqa: BLE001 - record the failure as the result
                res[name][mode.value] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
                if "disagrees with onnxruntime" in str(exc) and mode is not Mode.INT8:
                    break  # the float graph is wrong: every float mode is refused the same way
    return res


def run(work: Path) -> dict:
    results: dict = {"seconds": {}}
    t = time.time()
    sets = clf.eval_sets()
    results["classifiers"] = clf.shipped(work, sets)
    results["seconds"]["classifiers"] = round(time.time() - t, 1)
    t = time.time()
    results["calibration_repeat"] = clf.calibration_repeat(work, sets, results["classifiers"])
    results["seconds"]["calibration_repeat"] = round(time.time() - t, 1)
    t = time.time()
    results["encoders"] = encoders(work)
    results["seconds"]["encoders"] = round(time.time() - t, 1)
    results["markdown"] = markdown(results)
    return results


def markdown(r: dict) -> str:
    lines = ["## ONNX input (PyTorch-exported models through onnx2tf's float graph)", "",
             *clf.markdown(r["classifiers"], r.get("calibration_repeat")), "",
             "Sentence encoders (int64 token ids + attention mask, exported from PyTorch): cosine of the "
             "pooled embedding against onnxruntime on held-out inputs.", "",
             "| encoder | mode | size | vs fp32 | cosine vs onnxruntime | float TFLite rel. error | "
             "float ops | Flex ops |", "|---|---|---|---|---|---|---|---|"]
    for name, modes in r["encoders"].items():
        if "skipped" in modes:
            lines.append(f"| {name} | - | - | skipped: {modes['skipped'][:100]} | - |")
            continue
        fp32_size = (modes.get("fp32") or {}).get("size_bytes")
        for mode, v in modes.items():
            if "failed" in v:
                lines.append(f"| {name} | {mode} | - | - | failed: {v['failed'][:160]} | - | - | - |")
                continue
            ratio = f"{v['size_bytes'] / fp32_size:.2f}x" if fp32_size else "-"
            fid = (v.get("fidelity") or {}).get("max_rel_error")
            floats = "none (all-integer)" if not v["float_ops"] else str(len(v["float_ops"]))
            lines.append(f"| {name} | {mode} | {v['size_bytes']:,} B | {ratio} | {v['cosine_vs_onnxruntime']:.5f} | "
                         f"{'-' if fid is None else f'{fid:.2g}'} | {floats if mode in ('int8', 'int16x8') else '-'} | "
                         f"{', '.join(v['flex_ops']) or 'none'} |")
    return "\n".join(lines)
