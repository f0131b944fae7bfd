"""An INT8 (or 16x8) model whose int8 weights and int32 (16x8: int64) biases are edited in its bytes.

A PTQ step that fits layers one at a time must see each layer's inputs as the INT8 model makes them after
the upstream layers were changed. Re-quantizing the whole model with the converter before every layer made
that the slowest part of a conversion (ppocr_det 350 -> 1629 s). Instead the converter quantizes once and
each layer's new integers are written straight into the flatbuffer's buffers: weights as the integers
themselves, biases as ``round(bias / (input scale x weight scale))`` per channel, which is what the
converter writes for that float bias (``tests/test_ptq_sequential_rounding.py`` checks both).
"""
from __future__ import annotations

import copy

import numpy as np

from edgeq.quantize.prepare.activations import TensorTable
from edgeq.quantize.prepare.adaround import LAYERS
from edgeq.tflite import flatbuffer as fb


def weight_layers(model) -> dict[str, int]:
    """Output tensor name -> op index of the conv/depthwise/dense ops."""
    sg, names = model.subgraphs[0], fb.op_names(model)
    return {fb.tensor_name(sg, int(op.outputs[0])): k for k, op in enumerate(sg.operators)
            if names[op.opcodeIndex] in LAYERS and len(op.inputs) > 1 and len(op.outputs)}


class Int8InPlace:
    """The INT8 model as a bytearray, with each layer's weight and bias buffer writable in place."""

    def __init__(self, quantized: bytes):
        model = fb.load(quantized)
        sg = model.subgraphs[0]
        layers = weight_layers(model)
        if _unshare(model, list(layers.values())):
            quantized = fb.dump(model)  # once: from here on, the buffers are edited in the bytes
        self.content = bytearray(quantized)
        self.table = TensorTable.of_model(model)
        # output name -> (buffer, per-channel step, integer type: int32, or int64 in 16x8 models)
        self.biases: dict[str, tuple[int, np.ndarray, type]] = {}
        self.weights: dict[str, int] = {}  # output name -> buffer of the int8 weight
        # output name -> the layer's input tensor here (a 16x8 model's first layer reads its QUANTIZE op's
        # output, a tensor the float model does not have)
        self.inputs: dict[str, int] = {}
        for name, k in layers.items():
            op = sg.operators[k]
            w = sg.tensors[int(op.inputs[1])]
            if w.type != fb.INT8 or not w.buffer or name not in self.table.index:
                continue  # a layer left in float
            self.weights[name] = w.buffer
            self.inputs[name] = int(op.inputs[0])
            t = sg.tensors[int(op.inputs[2])] if len(op.inputs) > 2 and int(op.inputs[2]) >= 0 else None
            q = t.quantization if t is not None else None
            kind = {fb.INT32: np.int32, fb.INT64: np.int64}.get(t.type) if t is not None else None
            if kind is not None and t.buffer and q is not None and q.scale is not None:
                self.biases[name] = (t.buffer, _bias_step(sg, op, np.asarray(q.scale, np.float64)), kind)

    @staticmethod
    def key(layer) -> str:
        """How this model names ``layer`` (an ``adaround.Layer``)."""
        return layer.q_out

    def write(self, name: str, ints: np.ndarray, weights: np.ndarray, bias: np.ndarray | None) -> bool:
        """Write layer ``name``'s integers (``weights``, their float values, are for ``FloatInPlace``'s
        interface) and, if given, its float bias quantized; False when they cannot be written in place."""
        if not self.write_weights(name, ints):
            return False
        if bias is not None and not self.write_bias(name, bias):  # sizes checked like the weight's: not reached
            raise ValueError(f"bias of '{name}' cannot be written in place")
        return True

    def write_bias(self, name: str, bias: np.ndarray) -> bool:
        """Write layer ``name``'s bias as the float ``bias`` quantized the way the converter does it
        (round(bias / (input scale x weight scale)), per channel); False when it cannot be written."""
        buffer, step, kind = self.biases[name]
        view = fb.buffer_in_place(self.content, buffer)
        if view is None or view.size != np.dtype(kind).itemsize * bias.size or step.size not in (1, bias.size):
            return False
        top = np.iinfo(kind)
        view.view(kind)[:] = np.clip(np.round(bias.astype(np.float64) / step), top.min, top.max).astype(kind)
        return True

    def write_weights(self, name: str, q: np.ndarray) -> bool:
        """Write layer ``name``'s int8 weight (in the converter's layout); False when it cannot be written."""
        view = fb.buffer_in_place(self.content, self.weights[name]) if name in self.weights else None
        if view is None or view.size != q.size:
            return False
        view.view(np.int8)[:] = q.astype(np.int8).ravel()
        return True

    def ints(self, name: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(int8 weight, int32/int64 bias or None) of layer ``name`` as they are now, flat."""
        w = fb.buffer_in_place(self.content, self.weights[name]).view(np.int8).copy()
        b = self.biases.get(name)
        return w, None if b is None else fb.buffer_in_place(self.content, b[0]).view(b[2]).copy()


def _bias_step(sg, op, written: np.ndarray) -> np.ndarray:
    """The bias's integer step: input scale x weight scale, as the kernel adds it. The bias tensor's own
    scale says the same, except where the quantizer shared one zero bias between layers (TensorFlow's 16x8
    quantizer does) and gave it the first layer's step."""
    qi, qw = sg.tensors[int(op.inputs[0])].quantization, sg.tensors[int(op.inputs[1])].quantization
    if qi is None or qi.scale is None or qw is None or qw.scale is None or len(qi.scale) != 1:
        return written
    step = (np.float32(qi.scale[0]) * np.asarray(qw.scale, np.float32)).astype(np.float64)
    same = step.size == written.size or written.size == 1
    return written if same and np.allclose(written, step, rtol=1e-5) else step


def _unshare(model, ops: list[int]) -> bool:
    """Give each op's weight and bias (inputs 1 and 2) their own tensor and buffer (the quantizer shares
    equal constants, e.g. zero biases), so editing one layer moves no other; True when something was copied."""
    sg = model.subgraphs[0]
    users: dict[int, int] = {}
    for op in sg.operators:
        for i in (int(i) for i in op.inputs if int(i) >= 0):
            users[sg.tensors[i].buffer] = users.get(sg.tensors[i].buffer, 0) + 1
    changed = False
    for k in ops:
        for slot in (1, 2):
            if len(sg.operators[k].inputs) <= slot or int(sg.operators[k].inputs[slot]) < 0:
                continue
            t = sg.tensors[int(sg.operators[k].inputs[slot])]
            if not t.buffer or users[t.buffer] == 1:
                continue
            model.buffers.append(copy.deepcopy(model.buffers[t.buffer]))
            t = copy.deepcopy(t)
            t.buffer = len(model.buffers) - 1
            sg.tensors.append(t)
            sg.operators[k].inputs[slot] = len(sg.tensors) - 1
            changed = True
    return changed
