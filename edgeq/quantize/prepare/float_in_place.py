"""The calibrated (float) model with its conv/depthwise/dense weights and biases edited in its bytes: what
``sequential_rounding`` fits 16x8 layers on.

A 16x8 model's int16 activations lose next to nothing beside its int8 weights, and LiteRT runs 16x8 on
reference kernels: the zoo's EfficientNet-Lite1 takes 280 ms an inference in 16x8, 8 ms in float. Fitting
layer by layer runs the model once per layer on every fit sample, so the float model with the weights rounded
so far (written as ``scale x integer``) stands in for the 16x8 model; the quantizer turns those weights into
exactly the fitted integers at the end.
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.activations import TensorTable
from edgeq.quantize.prepare.int8_in_place import _unshare, weight_layers
from edgeq.tflite import flatbuffer as fb


class FloatInPlace:
    """The float model as a bytearray, with each layer's float32 weight and bias buffer writable in place
    (the same interface as ``Int8InPlace``: ``content``, ``table``, ``inputs``, ``weights``, ``biases``, ``write``)."""

    def __init__(self, calibrated: bytes):
        model = fb.load(calibrated)
        sg = model.subgraphs[0]
        layers = weight_layers(model)
        if _unshare(model, list(layers.values())):
            calibrated = fb.dump(model)
        self.content = bytearray(calibrated)
        self.table = TensorTable.of_model(model)
        self.weights: dict[str, int] = {}  # output name -> buffer of the float32 weight
        self.biases: dict[str, int] = {}  # output name -> buffer of the float32 bias
        self.inputs: dict[str, int] = {}  # output name -> the layer's input tensor
        for name, k in layers.items():
            op = sg.operators[k]
            w = sg.tensors[int(op.inputs[1])]
            if w.type != fb.FLOAT32 or not w.buffer:
                continue
            self.weights[name], self.inputs[name] = w.buffer, int(op.inputs[0])
            b = sg.tensors[int(op.inputs[2])] if len(op.inputs) > 2 and int(op.inputs[2]) >= 0 else None
            if b is not None and b.type == fb.FLOAT32 and b.buffer:
                self.biases[name] = b.buffer

    @staticmethod
    def key(layer) -> str:
        """How this model names ``layer`` (an ``adaround.Layer``)."""
        return layer.out

    def write(self, name: str, ints: np.ndarray, weights: np.ndarray, bias: np.ndarray | None) -> bool:
        """Write layer ``name``'s weights (``scale x ints``, in the model's layout) and, if given, its bias;
        False when they cannot be written in place."""
        if not self._write(self.weights.get(name), weights):
            return False
        return bias is None or self._write(self.biases.get(name), bias)

    def _write(self, buffer: int | None, values: np.ndarray) -> bool:
        view = fb.buffer_in_place(self.content, buffer) if buffer else None
        if view is None or view.size != 4 * values.size:
            return False
        view.view(np.float32)[:] = values.astype(np.float32).ravel()
        return True
