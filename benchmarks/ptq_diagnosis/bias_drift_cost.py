"""Time and effect of the layer-by-layer correction step on a zoo model's own calibrated flatbuffer (docs/ptq.md).

Step 1 converts the zoo model as `edgeq convert --mode int8` does and stops where the last step
(sequential_rounding; bias_drift before it) would run, saving the calibrated model and the fit samples; step 2
runs ``corrected`` (this checkout's sequential_rounding, or another module given with --module, e.g. the old
bias drift correction from `git show 202bd84:edgeq/quantize/prepare/bias_drift.py`) and scores plain and
corrected INT8 against the calibrated float model on the zoo's eval split.
    python -m benchmarks.ptq_diagnosis.bias_drift_cost capture efficientnet_lite0
    python -m benchmarks.ptq_diagnosis.bias_drift_cost score efficientnet_lite0 [--module old_bias_drift.py]
"""
import argparse
import importlib.util
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.zoo.manifest import cache_dir

CACHE = cache_dir()  # $EDGEQ_ZOO_CACHE or ~/.cache/edgeq/zoo, as the zoo run uses


def capture(name: str, out: Path) -> None:
    import edgeq.quantize.prepare.sequential_rounding as bd
    from benchmarks.zoo import item, manifest

    def save(cal, feeds):
        with open(out, "wb") as f:
            pickle.dump(dict(content=cal.content, per_channel=cal.per_channel, io=cal.io, source=cal.source,
                             feeds=feeds), f)
        print("captured", out, flush=True)
        os._exit(0)

    bd.corrected = save
    item.run_edgeq(manifest.load().model(name), "int8", CACHE, out.parent)


def outputs(content: bytes, feeds: dict) -> np.ndarray:
    """The first output of a .tflite per sample (int8 I/O quantized and dequantized), one row each."""
    from edgeq.modelinfo import open_interpreter
    from edgeq.quantize.prepare.activations import int_feeds

    it = open_interpreter(content=content)
    ins, out = it.get_input_details()[0], it.get_output_details()[0]
    it.resize_tensor_input(ins["index"], [1, *ins["shape"][1:]])
    it.allocate_tensors()
    x, res = next(iter(int_feeds(content, feeds).values())), []
    for s in range(len(x)):
        it.set_tensor(ins["index"], x[s:s + 1].astype(ins["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        res.append(y.reshape(-1))
    return np.stack(res)


def score(name: str, saved: Path, module: Path | None) -> None:
    from edgeq.quantize.selective import Calibrated

    d = pickle.loads(saved.read_bytes())
    cal = Calibrated(d["content"], d["per_channel"], d["io"], d["source"])
    e = np.load(CACHE / "data" / name / "eval_edgeq.npz")
    feeds = {k: (e[k].transpose(0, 2, 3, 1) if e[k].ndim == 4 and e[k].shape[1] == 3 else e[k]).astype(np.float32)
             for k in d["feeds"]}
    ref = outputs(cal.content, feeds)

    def line(content):
        y = outputs(content, feeds)
        sqnr = 10 * np.log10((ref ** 2).sum() / ((ref - y) ** 2).sum())
        return f"eval SQNR {sqnr:.2f} dB, top-1 agreement {np.mean(ref.argmax(1) == y.argmax(1)):.3f}"

    print("plain:", line(cal.quantize()), flush=True)
    if module:
        spec = importlib.util.spec_from_file_location("bias_drift_under_test", module)
        bd = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = bd  # dataclasses look their module up
        spec.loader.exec_module(bd)
    else:
        import edgeq.quantize.prepare.sequential_rounding as bd
    t = time.perf_counter()
    done = bd.corrected(cal, d["feeds"])
    _, content, n = done if isinstance(done, tuple) else (None, done.content, done.layers)
    print(f"{module or 'sequential_rounding'}: {time.perf_counter() - t:.1f} s, {n} layers,", line(content))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["capture", "score"])
    ap.add_argument("model")
    ap.add_argument("--saved", type=Path, default=None, help="pickle of the captured model (default /tmp/<model>.pkl)")
    ap.add_argument("--module", type=Path, default=None)
    a = ap.parse_args()
    saved = a.saved or Path("/tmp") / f"{a.model}.pkl"
    capture(a.model, saved) if a.what == "capture" else score(a.model, saved, a.module)
