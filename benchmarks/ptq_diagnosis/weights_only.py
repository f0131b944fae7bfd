"""How much of an INT8 model's loss is its weights: the float model run with the INT8 model's weights.

Takes a float and an INT8 .tflite of one model from the same converter graph (e.g. the zoo's
<cache>/work/<model>_{fp32,int8}.tflite), puts the INT8 model's dequantized weights and biases (learned rounding,
bias correction and all) into the float model's CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops, in op order,
and scores float, weights-only and INT8 against the float model on the zoo's eval split (agreement, SQNR).
What the weights-only model loses is the weights' share; the rest of the INT8 loss is in the activations:
    python -m benchmarks.ptq_diagnosis.weights_only efficientnet_lite1 FP32.tflite INT8.tflite [more INT8 ...]
``--by-kind`` scores one op kind's int8 weights at a time, ``--per-layer N`` one op's at a time (first N samples);
``--nearest`` the float model's own weights rounded to nearest (what learned rounding improves on).
"""
import argparse
from pathlib import Path

import numpy as np

from benchmarks.zoo.manifest import cache_dir

CACHE = cache_dir()  # $EDGEQ_ZOO_CACHE or ~/.cache/edgeq/zoo, as the zoo run uses
AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # output-channel axis of each kind's weights
WEIGHTED = tuple(AXIS)


def split_feeds(model: str, split: str, samples: int | None = None) -> dict[str, np.ndarray]:
    """A zoo model's ``split`` ("eval" or "calib"; its first ``samples``) as the feeds of edgeq's NHWC .tflite."""
    from benchmarks.zoo import data, manifest

    with np.load(data.prepare(manifest.load().model(model), CACHE) / f"{split}_edgeq.npz") as e:
        x = e[e.files[0]].astype(np.float32)[:samples]
    if x.ndim == 4 and x.shape[1] in (1, 3):  # the zoo keeps ONNX's NCHW; edgeq's .tflite takes NHWC
        x = x.transpose(0, 2, 3, 1)
    return {"input": x}


def eval_feeds(model: str, samples: int | None = None) -> dict[str, np.ndarray]:
    """A zoo model's eval split (its first ``samples``) as the feeds of edgeq's NHWC .tflite."""
    return split_feeds(model, "eval", samples)


def onnx_reference(model: str, x: np.ndarray) -> np.ndarray:
    """A zoo ONNX model's first output in onnxruntime on NHWC images ``x``, one flattened row per sample."""
    import onnxruntime as ort

    path = next((CACHE / "models").glob(model.replace("_", "-") + ".onnx"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[s:s + 1].transpose(0, 3, 1, 2)})[0].reshape(1, -1)
                           for s in range(len(x))])


def _dequantized(model, sg, index: int) -> np.ndarray:
    """A constant int8/int32/int64 (or float) tensor's float value (per-channel scales along quantizedDimension)."""
    from edgeq.tflite import flatbuffer as fm

    t = sg.tensors[index]
    if t.type == fm.FLOAT32:  # e.g. a dynamic-range model's biases
        return fm.const(model, sg, index)
    dtype = {fm.INT8: np.int8, fm.INT32: np.int32, 4: np.int64}[t.type]  # 4: INT64 (16x8 biases)
    q = np.frombuffer(fm.raw_data(model, t).tobytes(), dtype).reshape(list(t.shape)).astype(np.float64)
    scale = np.asarray(t.quantization.scale, np.float64)
    zero = np.asarray(t.quantization.zeroPoint if t.quantization.zeroPoint is not None else [0], np.float64)
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[t.quantization.quantizedDimension] = scale.size
    return ((q - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)


def weighted_ops(fp32: bytes) -> list[tuple[str, str]]:
    """(op kind, output tensor name) of each weighted op, in op order: the indices ``with_int8_weights`` takes."""
    from edgeq.tflite import flatbuffer as fm

    model = fm.load(fp32)
    sg, names = model.subgraphs[0], fm.op_names(model)
    return [(names[op.opcodeIndex], fm.tensor_name(sg, int(op.outputs[0]))) for op in sg.operators
            if names[op.opcodeIndex] in WEIGHTED]


def with_int8_weights(fp32: bytes, int8: bytes, only: set[int] | None = None) -> tuple[bytes, int]:
    """``fp32`` with every weighted op's weights and bias taken from ``int8`` (or only those of the weighted ops
    numbered in ``only``); returns (bytes, weighted ops in the graph)."""
    from edgeq.tflite import flatbuffer as fm

    fmod, qmod = fm.load(fp32), fm.load(int8)
    fsg, qsg = fmod.subgraphs[0], qmod.subgraphs[0]
    fnames, qnames = fm.op_names(fmod), fm.op_names(qmod)
    fops = [op for op in fsg.operators if fnames[op.opcodeIndex] in WEIGHTED]
    qops = [op for op in qsg.operators if qnames[op.opcodeIndex] in WEIGHTED]
    if len(fops) != len(qops):
        raise SystemExit(f"{len(fops)} weighted ops in the float model, {len(qops)} in the INT8 one: not one graph")
    for k, (fop, qop) in enumerate(zip(fops, qops)):
        if only is not None and k not in only:
            continue
        for slot in (1, 2):
            if slot >= len(fop.inputs) or int(fop.inputs[slot]) < 0 or int(qop.inputs[slot]) < 0:
                continue
            old = fm.const(fmod, fsg, int(fop.inputs[slot]))
            new = _dequantized(qmod, qsg, int(qop.inputs[slot]))
            if old is None or old.shape != new.shape:
                raise SystemExit(f"op {fsg.operators.index(fop)}: input {slot} shapes differ "
                                 f"({None if old is None else old.shape} vs {new.shape})")
            fop.inputs[slot] = fm.new_const(fmod, fsg, int(fop.inputs[slot]), new, "/int8_weights")
    return fm.dump(fmod), len(fops)



def nearest_int8(w: np.ndarray, axis: int, clip: str = "max") -> np.ndarray:
    """``w`` rounded to nearest on a symmetric per-channel int8 grid (what a converter does without learned
    rounding); ``clip="mse"`` picks each channel's range among 50-100% of its peak by squared error."""
    wm = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    peak = np.abs(wm).max(1, keepdims=True) + 1e-12
    best, best_err = None, None
    for r in ([1.0] if clip == "max" else np.linspace(0.5, 1.0, 26)):
        step = peak * r / 127
        d = np.clip(np.round(wm / step), -127, 127) * step
        err = ((d - wm) ** 2).sum(1, keepdims=True)
        best = d if best is None else np.where(err < best_err, d, best)
        best_err = err if best_err is None else np.minimum(err, best_err)
    return np.moveaxis(best.reshape(np.moveaxis(w, axis, 0).shape), 0, axis).astype(np.float32)


def with_nearest_weights(fp32: bytes, clip: str) -> bytes:
    """``fp32`` with every weighted op's weights rounded to nearest per-channel int8 (biases stay float)."""
    from edgeq.tflite import flatbuffer as fm

    model = fm.load(fp32)
    sg, names = model.subgraphs[0], fm.op_names(model)
    for op in sg.operators:
        kind = names[op.opcodeIndex]
        if kind in AXIS and (w := fm.const(model, sg, int(op.inputs[1]))) is not None:
            op.inputs[1] = fm.new_const(model, sg, int(op.inputs[1]), nearest_int8(w, AXIS[kind], clip), "/nearest")
    return fm.dump(model)


def main() -> None:
    from benchmarks.ptq_diagnosis.bias_drift_cost import outputs
    from edgeq import metrics

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model name, e.g. efficientnet_lite1 (its eval split is used)")
    ap.add_argument("fp32")
    ap.add_argument("int8", nargs="+")
    ap.add_argument("--nearest", action="store_true",
                    help="also score the float model with its own weights rounded to nearest per-channel int8 "
                         "(max and MSE-clipped ranges): the baseline learned rounding is measured against")
    ap.add_argument("--by-kind", action="store_true",
                    help="also score the int8 weights of one op kind at a time (DEPTHWISE_CONV_2D, CONV_2D, ...)")
    ap.add_argument("--per-layer", type=int, default=0, metavar="N",
                    help="also rank the weighted ops: one op's int8 weights at a time, on the first N samples")
    a = ap.parse_args()
    feeds = eval_feeds(a.model)
    x = feeds["input"]
    fp32 = Path(a.fp32).read_bytes()
    ref = outputs(fp32, feeds)
    ops = weighted_ops(fp32)
    print(f"{a.model}: {len(x)} eval samples, scored against {Path(a.fp32).name}")
    if a.nearest:
        for clip in ("max", "mse"):
            y = outputs(with_nearest_weights(fp32, clip), feeds)
            print(f"  {'float activations, weights rounded to nearest int8 (' + clip + ' ranges)':70s} agreement "
                  f"{metrics.agreement(ref, y):.3f}  SQNR {metrics.sqnr_db(ref, y):6.2f} dB")
    for path in a.int8:
        int8 = Path(path).read_bytes()
        mixed, n = with_int8_weights(fp32, int8)
        for label, content in ((f"{Path(path).name}: float activations, its {n} ops' int8 weights", mixed),
                               (f"{Path(path).name}: INT8", int8)):
            y = outputs(content, feeds)
            print(f"  {label:70s} agreement {metrics.agreement(ref, y):.3f}  SQNR {metrics.sqnr_db(ref, y):6.2f} dB")
        if a.by_kind:
            for kind in WEIGHTED:
                picked = {k for k, (kk, _) in enumerate(ops) if kk == kind}
                y = outputs(with_int8_weights(fp32, int8, only=picked)[0], feeds)
                print(f"  only the {len(picked):3d} {kind:18s} ops' int8 weights: agreement "
                      f"{metrics.agreement(ref, y):.3f}  SQNR {metrics.sqnr_db(ref, y):6.2f} dB")
        if a.per_layer:
            sub = {"input": x[:a.per_layer]}
            rows = []
            for k, (kind, name) in enumerate(ops):
                y = outputs(with_int8_weights(fp32, int8, only={k})[0], sub)
                rows.append((metrics.sqnr_db(ref[:a.per_layer], y), k, kind, name))
            print(f"  the 12 weighted ops whose int8 weights alone cost most ({a.per_layer} samples; output SQNR):")
            for db, k, kind, name in sorted(rows)[:12]:
                print(f"    #{k:3d} {kind:18s} {db:6.2f} dB  {name[:90]}")


if __name__ == "__main__":
    main()
