"""Run one sample at a time through the source framework and through a .tflite, outputs in the source's layout.

Converters reorder axes (onnx2tf makes NCHW inputs NHWC, and may transpose outputs) and rename tensors; the
alignment here is by shape only - never by value - so a mis-converted model still shows up as a bad metric.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np

from benchmarks.zoo.manifest import Format, ZooModel


def source_outputs(z: ZooModel, path: Path, feeds: dict) -> list[np.ndarray]:
    """The source framework's outputs (onnxruntime or Keras), one stacked array per output."""
    n = len(feeds[z.inputs[0].name])
    if z.format is Format.ONNX:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = [sess.run(None, {s.name: np.asarray(feeds[s.name][i]) for s in z.inputs}) for i in range(n)]
    else:
        import keras

        model = keras.models.load_model(str(path), compile=False)
        outs = [[np.asarray(o) for o in _as_list(model([feeds[s.name][i] for s in z.inputs] if len(z.inputs) > 1
                                                       else feeds[z.inputs[0].name][i], training=False))]
                for i in range(n)]
    return [np.stack([o[k] for o in outs]) for k in range(len(outs[0]))]


def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _key(name: str) -> str:
    """Tensor names as converters mangle them ('serving_default_x:0', 'x_1', 'input.1' -> 'input_1')."""
    name = re.sub(r"^serving_default_", "", name.split(":")[0])
    return re.sub(r"[^0-9a-z]", "_", name.lower())


def fit(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``x`` rearranged to ``shape``: as is, channel-last (NCHW->NHWC style), or a reshape of the same size."""
    if x.ndim == len(shape) - 1 and shape[0] == 1:
        x = x[None]  # an input without a batch axis (a recurrent state) that edgeq gave one
    if x.shape == tuple(shape):
        return x
    if x.ndim == len(shape) and x.ndim >= 3:
        perm = (0, *range(2, x.ndim), 1)
        if x.transpose(perm).shape == tuple(shape):
            return x.transpose(perm)
    if x.size == int(np.prod(shape)):
        return x.reshape(shape)
    return None


def unfit(y: np.ndarray, ref_shape: tuple[int, ...]) -> np.ndarray:
    """A converted output back in the source's layout: as is, a permutation matching the shape, or a reshape."""
    if y.shape == tuple(ref_shape):
        return y
    if y.ndim == len(ref_shape) and y.ndim >= 3:
        back = (0, y.ndim - 1, *range(1, y.ndim - 1))  # channel-last back to channel-first first
        cands = [back] + [p for p in itertools.permutations(range(y.ndim)) if p[0] == 0]
        for p in cands:
            if y.transpose(p).shape == tuple(ref_shape):
                return y.transpose(p)
    return y.reshape(ref_shape)


class TFLiteSample:
    """A LiteRT interpreter (XNNPACK, as the CLI's runtime) fed the source's per-sample inputs."""

    def __init__(self, path: Path, z: ZooModel):
        from edgeq.modelinfo import open_interpreter
        from edgeq.runtime import dequantize, quantize

        self._q, self._dq = quantize, dequantize
        self.interp = open_interpreter(path, None)
        self.interp.allocate_tensors()
        ins = self.interp.get_input_details()
        self.outs = self.interp.get_output_details()
        by_key = {_key(d["name"]): d for d in ins}
        self.feed_map = []
        for i, s in enumerate(z.inputs):  # by name, else by position
            d = by_key.get(_key(s.name)) or (ins[i] if len(ins) == len(z.inputs) else None)
            if d is None:
                raise RuntimeError(f"converted model inputs {[x['name'] for x in ins]} do not match {s.name}")
            self.feed_map.append((s.name, d))

    def run(self, sample: dict) -> list[np.ndarray]:
        for name, d in self.feed_map:
            x = fit(np.asarray(sample[name]), tuple(d["shape"]))
            if x is None:
                raise RuntimeError(f"input {name} {np.shape(sample[name])} does not fit {tuple(d['shape'])}")
            dt = np.dtype(d["dtype"])
            scale, zp = d["quantization"]
            if dt.kind in "iu" and scale and x.dtype.kind == "f":
                x = self._q(x, scale, zp, dt)
            self.interp.set_tensor(d["index"], x.astype(dt, copy=False))
        self.interp.invoke()
        res = []
        for d in self.outs:
            y = self.interp.get_tensor(d["index"])
            scale, zp = d["quantization"]
            res.append(self._dq(y, scale, zp) if scale else y.astype(np.float32))
        return res


def match_outputs(ref_one: list[np.ndarray], got_one: list[np.ndarray]) -> list[int]:
    """For each source output, the index of the converted output with the same number of values (in order)."""
    free = list(range(len(got_one)))
    order = []
    for r in ref_one:
        k = next((j for j in free if got_one[j].size == r.size), None)
        if k is None:
            raise RuntimeError(f"no converted output has {r.size} values like the source's {r.shape}; "
                               f"converted: {[g.shape for g in got_one]}")
        free.remove(k)
        order.append(k)
    return order


def tflite_outputs(z: ZooModel, path: Path, feeds: dict, ref: list[np.ndarray]) -> list[np.ndarray]:
    """The .tflite's outputs on every sample, matched and laid out like ``ref`` (the source's)."""
    runner = TFLiteSample(path, z)
    n = len(feeds[z.inputs[0].name])
    names = [s.name for s in z.inputs]
    per = [runner.run({k: feeds[k][i] for k in names}) for i in range(n)]
    order = match_outputs([r[0] for r in ref], per[0])
    return [np.stack([unfit(p[j], r.shape[1:]) for p in per]) for j, r in zip(order, ref)]
