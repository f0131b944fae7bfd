"""Concatenations that an int8 model cannot represent: inputs whose ranges differ by orders of magnitude.

An int8 CONCATENATION has one scale for its output, so every input is requantized to the widest one's
grid. A detector head that concatenates box coordinates (0..320 pixels) with class scores (0..1) into one
output keeps the scores on a single int8 step: they all become 0 or 1. Calibration cannot fix this (the
converter does what it must), so the conversion report names the op and what to do instead.
"""
from __future__ import annotations

from edgeq.tflite import flatbuffer as fb

MIN_LEVELS = 8  # an input squeezed onto fewer int8 steps than this has lost its values


def _span(tensor) -> float | None:
    q = tensor.quantization
    if tensor.type != fb.INT8 or q is None or q.scale is None or len(q.scale) != 1:
        return None
    return 255.0 * float(q.scale[0])


def _before_requantize(sg, names, producer: dict[int, int], i: int) -> int:
    """The tensor ``i`` was requantized from (the quantizer inserts int8 -> int8 QUANTIZE ops to put every
    concat input on the output's grid), or ``i`` itself."""
    while (k := producer.get(i)) is not None and names[sg.operators[k].opcodeIndex] == "QUANTIZE":
        src = int(sg.operators[k].inputs[0])
        if sg.tensors[src].type != fb.INT8:
            break
        i = src
    return i


def squeezed_concat_inputs(content: bytes) -> list[str]:
    """One line per int8 CONCATENATION input that keeps fewer than MIN_LEVELS of the output's 256 steps."""
    model = fb.load(content)
    names = fb.op_names(model)
    out: list[str] = []
    for sg in model.subgraphs:
        producer = {int(t): k for k, p in enumerate(sg.operators) for t in p.outputs}
        for op in sg.operators:
            if names[op.opcodeIndex] != "CONCATENATION" or not len(op.outputs):
                continue
            o = sg.tensors[int(op.outputs[0])]
            o_span = _span(o)
            if not o_span:
                continue
            for i in (int(i) for i in op.inputs if int(i) >= 0):
                i = _before_requantize(sg, names, producer, i)
                span = _span(sg.tensors[i])
                if span is None or 256 * span / o_span >= MIN_LEVELS:
                    continue
                out.append(
                    f"CONCATENATION '{fb.name_of(o)}' (range {o_span:.3g}) squeezes input '{fb.tensor_name(sg, i)}' "
                    f"(range {span:.3g}) onto {256 * span / o_span:.1f} of its 256 int8 steps: that input's values "
                    "are lost. Export the model with the two parts as separate outputs or scaled to similar ranges "
                    "(e.g. boxes divided by the image size), or convert with 16-bit activations (--mode int16x8).")
    return out
