"""bench_onnx's classifier side by side: edgeq's full INT8 against onnx2tf's own ``-oiqt`` full-integer
output, each quantizing with the same calibration images, on the PyTorch-exported ONNX classifiers.

Two measurements. (1) The samples as shipped: onnxruntime float, edgeq fp32 and INT8 (defaults, so
``--ptq auto``), onnx2tf -oiqt with both TFLite backends, top-1 and same-top-1-as-onnxruntime on the 2,000
eval images and, when Debian's dataset-fashion-mnist is installed, on all 10,000 test images.
(2) When the dataset is installed, a noise-robust repeat: the same conversions with K disjoint 300-image
calibration sets (the sample's calib.npz plus K-1 seeded draws from the *training* split), each model
scored on all 10,000 test images, with the paired difference edgeq - onnx2tf per set. A few images out
of 10,000 is within the spread one calibration set gives; the paired mean over sets is not.
Nothing here is tuned on test images: edgeq runs with its default options.
"""
from __future__ import annotations

import contextlib
import gzip
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
SAMPLES = ROOT / "sample_models"
CLASSIFIERS = ("fashion_torch", "fashion_mnv3")
DATA = SAMPLES / "fashion_torch"  # both classifiers' calib.npz / eval.npz (fashion_mnv3 symlinks them)
BACKENDS = ("flatbuffer_direct", "tf_converter")
FASHION_MNIST = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
N_SETS = 4  # calibration sets in the repeat: the sample's own + 3 drawn from the training split
N_CALIB = 300
SET_SEED = 2026  # fixed before any run; never re-drawn after looking at results


def edgeq_run(model: Path, mode: Mode, out: Path, calib: Path | None, eval_data: Path | None,
              shapes=None) -> dict:
    """``edgeq convert`` through the library with default options; the report fields the bench shows."""
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
            "fully_integer": d["fully_integer"], "float_ops": d["float_ops"], "ptq": d.get("ptq"),
            "seconds": d["timings_s"]}


def _idx(name: str, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(FASHION_MNIST / name).read(), np.uint8, offset=offset)


def have_dataset() -> bool:
    return all((FASHION_MNIST / f).exists() for f in ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"))


def eval_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """NCHW float images in [0, 1] (the samples' preprocessing, build_onnx.py) and labels by set name."""
    ev = np.load(DATA / "eval.npz")
    sets = {"eval2k": (ev["image"], ev["y"])}
    if have_dataset():
        x = _idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255
        sets["test10k"] = (x, _idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64))
    return sets


def calibration_sets() -> list[np.ndarray]:
    """The sample's calib.npz, then N_SETS-1 disjoint seeded 300-image draws from the training split that
    share no image with it (byte-equal training images excluded too). Test images are never drawn."""
    base = np.load(DATA / "calib.npz")["image"]
    sets = [base]
    if not have_dataset():
        return sets
    train = _idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 784)
    taken = {row.tobytes() for row in np.round(base.reshape(len(base), -1) * 255).astype(np.uint8)}
    free = np.array([i for i, row in enumerate(train) if row.tobytes() not in taken])
    assert len(train) - len(free) >= len(base), "calib.npz images not found in the training split"
    pick = np.random.default_rng(SET_SEED).choice(free, (N_SETS - 1) * N_CALIB, replace=False)
    for k in range(N_SETS - 1):
        chosen = np.sort(pick[k * N_CALIB:(k + 1) * N_CALIB])
        sets.append(train[chosen].reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    return sets


def onnxruntime_outputs(model: Path, feeds: dict[str, np.ndarray], batch: int = 500) -> np.ndarray:
    """The model's first output from onnxruntime, ``batch`` rows at a time (1 for exports that fix batch 1)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    n = len(next(iter(feeds.values())))
    return np.concatenate([session.run(None, {k: v[i:i + batch] for k, v in feeds.items()})[0]
                           for i in range(0, n, batch)])


def score(tflite: Path, sets: dict, refs: dict) -> dict:
    """Top-1 and same-top-1-as-onnxruntime of a .tflite on every eval set (fed NHWC or NCHW as it takes)."""
    from edgeq.runtime import TFLiteRunner

    runner = TFLiteRunner(path=tflite)
    nhwc = list(runner.input_details[0]["shape"][1:]) == [28, 28, 1]
    out = {}
    for name, (x, y) in sets.items():
        pred = runner.run({"image": x.transpose(0, 2, 3, 1) if nhwc else x})[0].argmax(-1)
        out[name] = {"images": len(y), "top1": float(np.mean(pred == y)),
                     "agreement_vs_onnxruntime": float(np.mean(pred == refs[name].argmax(-1)))}
    return out


def _error_line(text: str) -> str:
    """The root cause of an onnx2tf failure: the first raised exception line, not its generic wrapper."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    errs = [ln.strip() for ln in text.splitlines() if re.match(r"^\s*[\w.]*(Error|Exception): ", ln)]
    specific = [e for e in errs if "fast path failed" not in e]
    return ((specific or errs or [ln for ln in text.splitlines() if "rror" in ln] or ["(no log)"])[0])[:300]


def _onnx2tf_once(model: Path, calib_nhwc: Path, scratch: Path, backend: str, static: bool) -> dict:
    import onnx2tf

    copy = scratch / "model.onnx"
    copy.write_bytes(model.read_bytes())  # onnx2tf rewrites its input file in place
    out = scratch / (backend + ("_static" if static else ""))
    log, old = io.StringIO(), os.getcwd()
    extra = {"overwrite_input_shape": ["image:1,1,28,28"]} if static else {}
    try:
        os.chdir(scratch)  # it leaves scratch files in the working directory
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            onnx2tf.convert(input_onnx_file_path=str(copy), output_folder_path=str(out), tflite_backend=backend,
                            output_integer_quantized_tflite=True, quant_type="per-channel",
                            custom_input_op_name_np_data_path=[["image", str(calib_nhwc), [[[[0.0]]]], [[[[1.0]]]]]],
                            non_verbose=True, verbosity="error", **extra)
    except (Exception, SystemExit):  # noqa: BLE001 - record what the user would see
        return {"failed": _error_line(log.getvalue() + traceback.format_exc())}
    finally:
        os.chdir(old)
    files = sorted(out.glob("*_full_integer_quant.tflite"))
    if not files:
        return {"failed": "no *_full_integer_quant.tflite written: " + _error_line(log.getvalue())}
    return {"path": files[0], "file": files[0].name, "size_bytes": files[0].stat().st_size}


def onnx2tf_oiqt(model: Path, calib_nchw: np.ndarray, work: Path, backend: str) -> dict:
    """onnx2tf's full-integer output (``-oiqt``, per-channel) with these calibration images as NHWC float32
    .npy, mean 0 / std 1 (the images are already in [0, 1]). When the model as exported (dynamic batch)
    fails, a user's next try is a static input shape: that is run too, and used if it works."""
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")  # onnxsim
    scratch = Path(tempfile.mkdtemp(prefix=f"oiqt-{backend}-", dir=work))
    np.save(scratch / "calib.npy", calib_nchw.transpose(0, 2, 3, 1).astype(np.float32))
    res = _onnx2tf_once(model, scratch / "calib.npy", scratch, backend, static=False)
    if "failed" in res:
        retry = _onnx2tf_once(model, scratch / "calib.npy", scratch, backend, static=True)
        if "failed" in retry:
            res["static_input_shape"] = retry["failed"]
        else:
            res = {**retry, "note": f"as exported: {res['failed']}; converted with a static input shape"}
    return res


def _scored(res: dict, sets: dict, refs: dict) -> dict:
    if "failed" in res:
        return res
    try:
        res["scores"] = score(res["path"], sets, refs)
    except Exception as exc:  # noqa: BLE001 - a model LiteRT refuses is a result too
        return {"failed": f"LiteRT could not run {res['file']}: {str(exc)[:200]}"}
    res["path"] = str(res["path"])
    return res


def shipped(work: Path, sets: dict) -> dict:
    """(1): every classifier as shipped, with the sample's calib.npz."""
    calib = np.load(DATA / "calib.npz")["image"]
    results = {}
    for name in CLASSIFIERS:
        model = SAMPLES / name / "model.onnx"
        refs = {k: onnxruntime_outputs(model, {"image": x}) for k, (x, _) in sets.items()}
        fp32 = edgeq_run(model, Mode.FP32, work / f"{name}_fp32.tflite", None, DATA / "eval.npz")
        int8 = edgeq_run(model, Mode.INT8, work / f"{name}_int8.tflite", DATA / "calib.npz", DATA / "eval.npz")
        int8["scores"] = score(work / f"{name}_int8.tflite", sets, refs)
        results[name] = {
            "float": {k: {"images": len(y), "top1": float(np.mean(refs[k].argmax(-1) == y))}
                      for k, (_, y) in sets.items()},
            "edgeq_fp32": fp32, "edgeq_int8": int8,
            "onnx2tf_oiqt": {b: _scored(onnx2tf_oiqt(model, calib, work, b), sets, refs) for b in BACKENDS}}
    return results


def calibration_repeat(work: Path, sets: dict, first: dict) -> dict | None:
    """(2): sets 1..K-1 converted here; set 0 is (1)'s result. Scored on the 10,000 test images."""
    if "test10k" not in sets:
        return None
    test = {"test10k": sets["test10k"]}
    calibs = calibration_sets()
    out = {"sets": len(calibs), "images_per_set": N_CALIB, "seed": SET_SEED, "models": {}}
    for name in CLASSIFIERS:
        model = SAMPLES / name / "model.onnx"
        refs = {"test10k": onnxruntime_outputs(model, {"image": sets["test10k"][0]})}
        per = {"edgeq": [first[name]["edgeq_int8"]["scores"]["test10k"]]}
        for b in BACKENDS:
            r = first[name]["onnx2tf_oiqt"][b]
            per[b] = [r["failed"] if "failed" in r else r["scores"]["test10k"]]
        for k, calib in enumerate(calibs[1:], start=1):
            path = work / f"calib_set{k}.npz"
            np.savez(path, image=calib)
            tfl = work / f"{name}_int8_set{k}.tflite"
            edgeq_run(model, Mode.INT8, tfl, path, None)
            per["edgeq"].append(score(tfl, test, refs)["test10k"])
            for b in BACKENDS:
                r = _scored(onnx2tf_oiqt(model, calib, work, b), test, refs)
                per[b].append(r["failed"] if "failed" in r else r["scores"]["test10k"])
        out["models"][name] = {"per_set": per, "summary": _summary(per)}
    return out


def _summary(per: dict) -> dict:
    """Means over the sets each converter succeeded on; paired differences edgeq - onnx2tf per set."""
    ok = lambda v: isinstance(v, dict)  # noqa: E731 - a failed set is its error string
    s = {}
    for conv, runs in per.items():
        good = [r for r in runs if ok(r)]
        s[conv] = {"succeeded": len(good), "of": len(runs),
                   "mean_top1": float(np.mean([r["top1"] for r in good])) if good else None,
                   "mean_agreement": float(np.mean([r["agreement_vs_onnxruntime"] for r in good])) if good else None}
        if conv == "edgeq":
            continue
        for key in ("top1", "agreement_vs_onnxruntime"):
            d = [e[key] - o[key] for e, o in zip(per["edgeq"], runs) if ok(e) and ok(o)]
            s[conv][f"edgeq_minus_{key}"] = ({"mean": float(np.mean(d)), "min": float(min(d)), "max": float(max(d)),
                                              "pairs": len(d)} if d else None)
    return s


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _pt(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{100 * d['mean']:+.2f} pt ({100 * d['min']:+.2f} .. {100 * d['max']:+.2f})"


LABELS = {"edgeq": "edgeq full INT8", "flatbuffer_direct": "onnx2tf -oiqt (flatbuffer_direct)",
          "tf_converter": "onnx2tf -oiqt (tf_converter)"}


def markdown(first: dict, repeat: dict | None) -> list[str]:
    has10k = any("test10k" in v["float"] for v in first.values())
    lines = ["Fashion-MNIST classifiers exported from PyTorch (NCHW): `fashion_torch` (Conv-ReLU-BN x2, Gemm x2) "
             "and `fashion_mnv3` (MobileNetV3-small style: depthwise 3x3/5x5, squeeze-excite with HardSigmoid, "
             "HardSwish, residual adds). Every INT8 model here was calibrated on the same 300 training images "
             "(the sample's calib.npz); edgeq with its defaults (`--ptq auto`).", "",
             "| classifier | model | top-1 (2,000 eval) | same top-1 as onnxruntime | "
             + ("top-1 (10,000 test) | same top-1 as onnxruntime | " if has10k else "") + "size |",
             "|---|---|---|---|" + ("---|---|" if has10k else "") + "---|"]
    for name, r in first.items():
        fp32 = r["edgeq_fp32"]  # scored by edgeq's own report, on the eval images only
        rows = [("onnxruntime float (original .onnx)", r["float"], None),
                ("edgeq fp32 TFLite", {"eval2k": fp32}, fp32["size_bytes"]),
                ("edgeq full INT8", r["edgeq_int8"]["scores"], r["edgeq_int8"]["size_bytes"])]
        for b, v in r["onnx2tf_oiqt"].items():
            rows.append((LABELS[b], v.get("scores") or v["failed"], v.get("size_bytes")))
        for label, sc, size in rows:
            if isinstance(sc, str):
                lines.append(f"| {name} | {label} | failed: {sc[:150]} | - | " + ("- | - | " if has10k else "") + "- |")
                continue
            cells = []
            for k in ("eval2k", "test10k") if has10k else ("eval2k",):
                s = sc.get(k) or {}
                cells += [_pct(s.get("top1")), _pct(s.get("agreement_vs_onnxruntime"))]
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + f" | {f'{size:,} B' if size else '-'} |")
    notes = [f"{name}: {b} {v['note'][:200]}" for name, r in first.items() for b, v in r["onnx2tf_oiqt"].items()
             if v.get("note")]
    notes += [f"{name}: {b} with a static input shape (1,1,28,28) failed too: {v['static_input_shape'][:200]}"
              for name, r in first.items() for b, v in r["onnx2tf_oiqt"].items() if v.get("static_input_shape")]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines += ["", "Float TFLite vs onnxruntime, max abs error on the 2,000 eval images: "
              + ", ".join(f"{name} {r['edgeq_fp32']['max_abs_vs_onnxruntime']:.3g}" for name, r in first.items())
              + "."]
    if repeat:
        n = repeat["sets"]
        lines += ["", f"Calibration repeat: each converter quantized each classifier with {n} disjoint "
                      f"{repeat['images_per_set']}-image calibration sets (set 0 = the sample's calib.npz, sets "
                      f"1-{n - 1} drawn seeded from the training split) and every model was scored on all 10,000 "
                      "test images; the paired difference is edgeq's value minus onnx2tf's on the same set "
                      "(mean, and min .. max over sets).", "",
                  "| classifier | converter | " + " | ".join(f"set {k}" for k in range(n))
                  + " | mean top-1 | mean same top-1 as onnxruntime | edgeq - it: top-1 | edgeq - it: same top-1 |",
                  "|---|---|" + "---|" * n + "---|---|---|---|"]
        for name, m in repeat["models"].items():
            for conv, runs in m["per_set"].items():
                s = m["summary"][conv]
                cells = [_pct(r["top1"]) if isinstance(r, dict) else "failed" for r in runs]
                lines.append(f"| {name} | {LABELS[conv]} | " + " | ".join(cells)
                             + f" | {_pct(s['mean_top1'])} | {_pct(s['mean_agreement'])} | "
                             + f"{_pt(s.get('edgeq_minus_top1'))} | {_pt(s.get('edgeq_minus_agreement_vs_onnxruntime'))} |")
    return lines
