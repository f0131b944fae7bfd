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

import numpy as np

from benchmarks import onnx_classifiers as clf, side_env
from edgeq import Mode

ROOT = Path(__file__).resolve().parents[1]
ENCODER = ROOT / "sample_models" / "tiny_encoder"
_edgeq = clf.edgeq_run


def _minilm_path() -> Path:
    return Path(os.environ.get("EDGEQ_MINILM_ONNX", ROOT / "benchmarks" / "work" / "onnx" / "minilm" / "model.onnx"))


def _tflite_outputs(path: Path, feeds: dict) -> np.ndarray:
    from edgeq.runtime import TFLiteRunner

    runner = TFLiteRunner(path=path)
    return runner.run({n: feeds[next(k for k in feeds if k in n)] for n in runner.input_names})[0]


def _semantics(reference: np.ndarray, outputs: np.ndarray) -> dict:
    """What a sentence-embedding user sees: pairs ranked alike, nearest neighbours kept."""
    from edgeq import metrics

    return {"cosine": metrics.cosine(reference, outputs),
            "similarity_spearman": metrics.similarity_spearman(reference, outputs),
            "neighbour_agreement": metrics.neighbour_agreement(reference, outputs)}


def ort_static_int8(model: Path, calib: Path, ev: dict, reference: np.ndarray, work: Path) -> dict:
    """onnxruntime's own static INT8 (QDQ, per-channel weights, MinMax calibration on the same inputs)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cal = dict(np.load(calib))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            if self.i >= len(next(iter(cal.values()))):
                return None
            self.i += 1
            return {k: v[self.i - 1:self.i] for k, v in cal.items()}

    pre, out = work / f"{model.stem}_ort_pre.onnx", work / f"{model.stem}_ort_int8.onnx"
    try:
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        quantized = clf.onnxruntime_outputs(out, ev, batch=1)
        return {"size_bytes": out.stat().st_size, **_semantics(reference, quantized)}
    except Exception as exc:  # noqa: BLE001 - a tool that fails is a result too
        return {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}


def encoders(work: Path) -> dict:
    res = {}
    cases = [("tiny_encoder", ENCODER / "model.onnx", ENCODER / "calib.npz", ENCODER / "eval.npz", 16)]
    mini = _minilm_path()
    needs = None if mini.exists() else side_env.export_minilm(mini, work)
    if needs is None:
        cases.append(("all-MiniLM-L6-v2", mini, mini.with_name(f"{mini.stem}_calib.npz"),
                      mini.with_name(f"{mini.stem}_eval.npz"), 64))
    else:
        res["all-MiniLM-L6-v2"] = {"skipped": f"needs {needs}"}
    for name, model, calib, evald, seq in cases:
        shapes = {"input_ids": (1, seq), "attention_mask": (1, seq)}
        res[name] = {}
        ev = dict(np.load(evald))
        reference = clf.onnxruntime_outputs(model, ev, batch=1)  # exports often fix batch 1
        for mode in (Mode.FP32, Mode.FP16, Mode.DYNAMIC, Mode.INT8, Mode.INT16X8):
            try:
                out = work / f"{name}_{mode.value}.tflite"
                res[name][mode.value] = _edgeq(model, mode, out, calib if mode.needs_calibration else None,
                                               evald, shapes)
                res[name][mode.value]["semantics"] = _semantics(reference, _tflite_outputs(out, ev))
            except Exception as exc:  # noqa: BLE001 - record the failure as the result
                res[name][mode.value] = {"failed": f"{type(exc).__name__}: {str(exc)[:300]}"}
                if "disagrees with onnxruntime" in str(exc) and mode is not Mode.INT8:
                    break  # the float graph is wrong: every float mode is refused the same way
        res[name]["ort_static_int8"] = ort_static_int8(model, calib, ev, reference, work)
    return res


def run(work: Path) -> dict:
    results: dict = {"seconds": {}, "needs": side_env.fashion_mnist()}  # installs it when it can
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
             *([f"10,000-image columns and the calibration repeat not measured: needs {r['needs']}.", ""]
               if r.get("needs") else []),
             *clf.markdown(r["classifiers"], r.get("calibration_repeat")), "",
             "Sentence encoders (int64 token ids + attention mask, exported from PyTorch), against onnxruntime "
             "float on held-out inputs: cosine of the pooled embedding, Spearman correlation of all pairwise "
             "similarities between the inputs, and the share of inputs whose nearest neighbour stays the same "
             "(what semantic search sees). `ort static int8` is onnxruntime's own `quantize_static` (QDQ, "
             "per-channel weights, MinMax) on the same calibration inputs, for reference.", "",
             "| encoder | mode | size | vs fp32 | cosine | pair Spearman | same neighbour | float TFLite rel. error | "
             "float ops | Flex ops |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, modes in r["encoders"].items():
        if "skipped" in modes:
            lines.append(f"| {name} | - | - | - | not measured: {modes['skipped'][:200]} | - | - | - | - | - |")
            continue
        fp32_size = (modes.get("fp32") or {}).get("size_bytes")
        for mode, v in modes.items():
            label = "ort static int8" if mode == "ort_static_int8" else mode
            if "failed" in v:
                lines.append(f"| {name} | {label} | - | - | failed: {v['failed'][:160]} | - | - | - | - | - |")
                continue
            ratio = f"{v['size_bytes'] / fp32_size:.2f}x" if fp32_size else "-"
            sem = v.get("semantics", v)
            cells = f"{sem['cosine']:.5f} | {sem['similarity_spearman']:.5f} | {100 * sem['neighbour_agreement']:.1f}%"
            if mode == "ort_static_int8":
                lines.append(f"| {name} | {label} | {v['size_bytes']:,} B | {ratio} | {cells} | - | - | - |")
                continue
            fid = (v.get("fidelity") or {}).get("max_rel_error")
            floats = "none (all-integer)" if not v["float_ops"] else str(len(v["float_ops"]))
            lines.append(f"| {name} | {label} | {v['size_bytes']:,} B | {ratio} | {cells} | "
                         f"{'-' if fid is None else f'{fid:.2g}'} | {floats if mode in ('int8', 'int16x8') else '-'} | "
                         f"{', '.join(v['flex_ops']) or 'none'} |")
    return "\n".join(lines)
