"""Running a calibrated or INT8 flatbuffer on calibration samples and reading its tensors.

What the flatbuffer PTQ steps (ranges, equalize_calibrated, sequential_rounding) share: one sample at a
time through LiteRT with every intermediate tensor kept, float feeds quantized to an INT8 model's inputs,
and int8 (or 16x8 models' int16) tensors dequantized by their own scale and zero point.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeq.tflite import flatbuffer as fb



def run_each_sample(content: bytes, feeds: dict[str, np.ndarray], tensors: list[int], limit: int | None = None):
    """Run ``content`` in LiteRT one calibration sample at a time; yield {tensor index: value} per sample."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": reading them is the point here
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=content, experimental_preserve_all_tensors=True)
    inputs = interp.get_input_details()
    for d in inputs:
        interp.resize_tensor_input(d["index"], [1, *d["shape"][1:]])
    interp.allocate_tensors()
    n = len(next(iter(feeds.values())))
    n = n if limit is None else min(limit, n)
    by_name = list(feeds.values()) if len(inputs) == 1 else [feeds[_feed_for(d["name"], feeds)] for d in inputs]
    for s in range(n):
        for d, arr in zip(inputs, by_name):
            interp.set_tensor(d["index"], arr[s:s + 1].astype(d["dtype"]))
        interp.invoke()
        yield {i: interp.get_tensor(i) for i in tensors}


def _feed_for(name: str, feeds: dict) -> str:
    return next((k for k in feeds if k in name), next(iter(feeds)))


def int_feeds(quantized: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feeds`` quantized to the int8 (or int16) inputs of ``quantized`` (float inputs pass unchanged)."""
    from edgeq.modelinfo import open_interpreter

    inputs = open_interpreter(content=quantized).get_input_details()
    if len(inputs) != len(feeds):
        return feeds
    out = {}
    for (name, x), d in zip(feeds.items(), inputs if len(inputs) == 1 else
                            [next(d for d in inputs if k in d["name"]) for k in feeds]):
        scale, zero = d["quantization"]
        if d["dtype"] not in (np.int8, np.int16) or not scale:
            out[name] = x
            continue
        top = np.iinfo(d["dtype"])
        out[name] = np.clip(np.round(x / scale + zero), top.min, top.max)
    return out


@dataclass(frozen=True)
class TensorTable:
    """Tensor name -> index, and the (scale, zero point) of every per-tensor int8 or int16 tensor (16x8
    models' activations), of one model."""

    index: dict[str, int]
    quantized: dict[int, tuple[float, float]]

    @classmethod
    def of(cls, content: bytes) -> "TensorTable":
        return cls.of_model(fb.load(content))

    @classmethod
    def of_model(cls, model) -> "TensorTable":
        sg = model.subgraphs[0]
        index, quantized = {}, {}
        for i, t in enumerate(sg.tensors):
            index[fb.name_of(t)] = i
            q = t.quantization
            if t.type in (fb.INT8, fb.INT16) and q is not None and q.scale is not None and len(q.scale) == 1:
                quantized[i] = (float(q.scale[0]), float(q.zeroPoint[0]) if q.zeroPoint is not None else 0.0)
        return cls(index, quantized)

    def real(self, i: int, value: np.ndarray) -> np.ndarray:
        """Tensor ``i``'s value as float32 (dequantized when it is an int8 or int16 tensor)."""
        if i not in self.quantized or value.dtype not in (np.int8, np.int16):
            return value.astype(np.float32)
        scale, zero = self.quantized[i]
        return (value.astype(np.float32) - zero) * scale
