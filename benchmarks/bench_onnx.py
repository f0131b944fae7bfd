"""ONNX input: edgeq's INT8 against onnxruntime float and against onnx2tf's own ``-oiqt`` INT8 (same
calibration images), float TFLite vs onnxruntime error, and transformer encoders in fp16/dynamic/int8.

The ONNX classifier is ``sample_models/fashion_torch`` (PyTorch export, NCHW). The real sentence encoder
all-MiniLM-L6-v2 is used when its ONNX export exists (``EDGEQ_MINILM_ONNX`` or
``benchmarks/work/onnx/minilm/model.onnx``, made by ``sample_models/build_onnx.py --minilm PATH`` in a
venv with torch); otherwise its rows say so.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

from edgeq import ConvertOptions, Mode, convert

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "sample_models" / "fashion_torch"
ENCODER = ROOT / "sample_models" / "tiny_encoder"


def _edgeq(model: Path, mode: Mode, out: Path, calib: Path | None, eval_data: Path, shapes=None) -> dict:
    rep = convert(model, ConvertOptions(mode=mode, calib=calib), out=out, eval_data=eval_data,
                  source_options={"input_shapes": shapes} if shapes else None)
    d = rep.to_dict()
    acc = d["accuracy"] or {}
    vs = acc.get("vs_float") or {}
    return {"size_bytes": d["size_bytes"], "top1": acc.get("top1"), "float_top1": acc.get("float_top1"),
            "drop_points": acc.get("drop_points"), "cosine_vs_onnxruntime": vs.get("cosine"),
            "agreement_vs_onnxruntime": vs.get("agreement"),
            "max_abs_vs_onnxruntime": vs.get("max_abs_error"), "fidelity": d.get("fidelity"),
            "flex_ops": [o for o in d["op_counts"] if "FLEX" in o.upper() or o.upper().startswith("CUSTOM")],
            "fully_integer": d["fully_integer"], "float_ops": d["float_ops"], "seconds": d["timings_s"]}


def onnx2tf_oiqt(work: Path, eval_nhwc: dict, labels: np.ndarray, float_ref: np.ndarray) -> dict:
    """onnx2tf's own full-integer output with the same 300 calibration images (as NHWC float32 .npy)."""
    import onnx2tf

    from edgeq.runtime import TFLiteRunner

    calib = np.load(FASHION / "calib.npz")["image"].transpose(0, 2, 3, 1).astype(np.float32)
    scratch = Path(tempfile.mkdtemp(prefix="oiqt-", dir=work))
    np.save(scratch / "calib.npy", calib)
    copy = scratch / "model.onnx"
    copy.write_bytes((FASHION / "model.onnx").read_bytes())  # onnx2tf rewrites its input file in place
    results = {}
    for backend in ("flatbuffer_direct", "tf_converter"):
        out = scratch / backend
        log = io.StringIO()
        old = os.getcwd()
        os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
        try:
            os.chdir(scratch)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                onnx2tf.convert(input_onnx_file_path=str(copy), output_folder_path=str(out), tflite_backend=backend,
                                output_integer_quantized_tflite=True, quant_type="per-channel",
                                custom_input_op_name_np_data_path=[["image", str(scratch / "calib.npy"),
                                                                    [[[[0.0]]]], [[[[1.0]]]]]],
                                non_verbose=True, verbosity="error")
        except (Exception, SystemExit) as exc:  # record what the user would see
            text = re.sub(r"\x1b\[[0-9;]*m", "", log.getvalue() + traceback.format_exc())
            err = [ln for ln in text.splitlines() if "rror" in ln] or [str(exc)]
            results[backend] = {"failed": err[-1].strip()[:300]}
            continue
        finally:
            os.chdir(old)
        files = sorted(out.glob("*_full_integer_quant.tflite"))
        if not files:
            results[backend] = {"failed": "no *_full_integer_quant.tflite written: "
                                          + (log.getvalue().strip().splitlines() or ["(no log)"])[-1][:200]}
            continue
        try:
            outs = TFLiteRunner(path=files[0]).run(eval_nhwc)[0]
        except Exception as exc:  # noqa: BLE001 - a model LiteRT refuses is a result too
            results[backend] = {"failed": f"LiteRT could not run {files[0].name}: {str(exc)[:200]}"}
            continue
        top1 = float(np.mean(outs.argmax(-1) == labels))
        results[backend] = {"file": files[0].name, "size_bytes": files[0].stat().st_size, "top1": top1,
                            "agreement_vs_onnxruntime": float(np.mean(outs.argmax(-1) == float_ref.argmax(-1))),
                            "test10k": _test10k(files[0])}
    return results


FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def _test10k(tflite: Path) -> dict | None:
    """Top-1 and agreement with onnxruntime on all 10,000 Fashion-MNIST test images, when Debian's
    dataset-fashion-mnist is installed: 2,000 eval images resolve 0.05 pt, too coarse for a side-by-side."""
    import gzip

    import onnxruntime as ort

    from edgeq.runtime import TFLiteRunner

    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").exists():
        return None
    x = np.frombuffer(gzip.open(FASHION_MNIST / "t10k-images-idx3-ubyte.gz").read(), np.uint8, offset=16)
    x = x.reshape(-1, 1, 28, 28).astype(np.float32) / 255  # the sample's preprocessing (build_onnx.py)
    y = np.frombuffer(gzip.open(FASHION_MNIST / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
    session = ort.InferenceSession(str(FASHION / "model.onnx"))
    ref = np.concatenate([session.run(None, {"image": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    outs = TFLiteRunner(path=tflite).run({"image": x.transpose(0, 2, 3, 1)})[0]
    return {"images": len(y), "float_top1": float(np.mean(ref.argmax(-1) == y)),
            "top1": float(np.mean(outs.argmax(-1) == y)),
            "agreement_vs_onnxruntime": float(np.mean(outs.argmax(-1) == ref.argmax(-1)))}


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
    results: dict = {}
    fp32 = _edgeq(FASHION / "model.onnx", Mode.FP32, work / "fashion_fp32.tflite", None, FASHION / "eval.npz")
    int8 = _edgeq(FASHION / "model.onnx", Mode.INT8, work / "fashion_int8.tflite", FASHION / "calib.npz",
                  FASHION / "eval.npz")
    int8["test10k"] = _test10k(work / "fashion_int8.tflite")
    results["fashion_torch"] = {"fp32": fp32, "int8": int8}
    # onnx2tf's own INT8, evaluated on the same eval images (NHWC, as its TFLite takes them).
    ev = np.load(FASHION / "eval.npz")
    eval_nhwc = {"image": ev["image"].transpose(0, 2, 3, 1)}
    import onnxruntime as ort

    float_ref = ort.InferenceSession(str(FASHION / "model.onnx")).run(None, {"image": ev["image"]})[0]
    results["onnx2tf_oiqt"] = onnx2tf_oiqt(work, eval_nhwc, ev["y"], float_ref)
    results["encoders"] = encoders(work)
    results["markdown"] = markdown(results)
    return results


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def markdown(r: dict) -> str:
    f = r["fashion_torch"]
    lines = ["## ONNX input (PyTorch-exported models through onnx2tf's float graph)", "",
             "Fashion-MNIST classifier exported from PyTorch (NCHW, Gemm, Flatten, BatchNormalization), "
             "2,000 test images, 300 calibration images:", "",
             "| model | top-1 | drop vs onnxruntime float | same top-1 as onnxruntime float | size |",
             "|---|---|---|---|---|",
             f"| onnxruntime float (original .onnx) | {_pct(f['int8']['float_top1'])} | - | - | - |",
             f"| edgeq fp32 TFLite | {_pct(f['fp32']['top1'])} | {f['fp32']['drop_points']:+.2f} pt | "
             f"{_pct(f['fp32'].get('agreement_vs_onnxruntime'))} | {f['fp32']['size_bytes']:,} B |",
             f"| edgeq full INT8 | {_pct(f['int8']['top1'])} | {f['int8']['drop_points']:+.2f} pt | "
             f"{_pct(f['int8'].get('agreement_vs_onnxruntime'))} | {f['int8']['size_bytes']:,} B |"]
    for backend, v in r["onnx2tf_oiqt"].items():
        if "failed" in v:
            lines.append(f"| onnx2tf -oiqt ({backend}) | failed: {v['failed'][:120]} | - | - | - |")
        else:
            drop = 100 * (f["int8"]["float_top1"] - v["top1"])
            lines.append(f"| onnx2tf -oiqt ({backend}) | {_pct(v['top1'])} | {drop:+.2f} pt | "
                         f"{_pct(v.get('agreement_vs_onnxruntime'))} | {v['size_bytes']:,} B |")
    t10 = [(name, v["test10k"]) for name, v in [("edgeq full INT8", f["int8"])]
           + [(f"onnx2tf -oiqt ({b})", v) for b, v in r["onnx2tf_oiqt"].items() if "failed" not in v]
           if v.get("test10k")]
    if t10:
        lines += ["", f"The same models on all {t10[0][1]['images']:,} Fashion-MNIST test images (Debian's "
                      f"dataset-fashion-mnist; onnxruntime float {_pct(t10[0][1]['float_top1'])}):", "",
                  "| model | top-1 | same top-1 as onnxruntime float |", "|---|---|---|"]
        lines += [f"| {name} | {_pct(v['top1'])} | {_pct(v['agreement_vs_onnxruntime'])} |" for name, v in t10]
    fid = f["fp32"]["fidelity"] or {}
    lines += ["", f"Float TFLite vs onnxruntime: max abs error {f['fp32']['max_abs_vs_onnxruntime']:.3g} on 2,000 "
                  f"eval images (fidelity check: {fid.get('max_abs_error', float('nan')):.3g} on "
                  f"{fid.get('samples')} {fid.get('inputs')} inputs).", "",
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
