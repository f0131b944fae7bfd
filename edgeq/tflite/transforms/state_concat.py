"""FULLY_CONNECTED(CONCATENATION(features, state)) written as FC(features) + FC(state): the float island of
silero-vad's LSTM cell under full INT8.

onnx2tf lowers a one-step ONNX ``LSTM`` to ``FC(concat([x, h]))`` where ``h`` is gathered from the model's
``state`` input (``[2, 1, H]``: h and c in one tensor). In int8, CONCATENATION, GATHER, RESHAPE and
TRANSPOSE must keep their input's scale, so the MLIR quantizer pushes the concat's scale (features and h,
about -1..7) back to the ``state`` input and from there forward to the gathered ``c`` (about -40..20 in
silero). ``c``'s own calibrated range then disagrees with the scale it inherited, and the quantizer leaves
that RESHAPE, the forget-gate MUL and a DEQUANTIZE/QUANTIZE pair in float: no full-INT8 model.

The matrix product of a concatenation is the sum of the products of its parts, so one FULLY_CONNECTED per
part (the weight's columns split to match, the bias on the first) and ADDs give the same numbers (float
summation order aside) without the concatenation. Each part then has its own input scale, and the state
keeps its own range. Only concatenations with a part that comes from a model input through data-movement
ops alone (a carried state) are rewritten: elsewhere the concatenation costs no float op.
"""
from __future__ import annotations

import copy

import numpy as np

from edgeq.tflite import flatbuffer

# Ops whose int8 kernels keep their input's scale and only move data: a model input read through them is
# still the model input as far as the quantizer's scale propagation goes.
_MOVES = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "GATHER", "SLICE", "STRIDED_SLICE", "SPLIT",
          "SPLIT_V"}
_WEIGHTS_DEFAULT = 0  # FullyConnectedOptionsWeightsFormat.DEFAULT


def _from_input(sg, names, producer: dict[int, int], tensor: int) -> bool:
    """Whether ``tensor`` is a model input, or data moved out of one (first operands of ``_MOVES`` ops)."""
    inputs = {int(i) for i in sg.inputs}
    seen = set()
    while tensor not in inputs:
        k = producer.get(tensor)
        if k is None or k in seen:
            return False
        seen.add(k)
        op = sg.operators[k]
        name = names[op.opcodeIndex]
        if name not in _MOVES:
            return False
        tensor = int(op.inputs[1] if name == "SPLIT" else op.inputs[0])  # SPLIT reads (axis, value)
    return True


def split_state_concats(content: bytes) -> tuple[bytes, int]:
    """Rewrite every float FC(concat(...)) over the last axis with a part read from a model input;
    returns (model, concatenations removed). Idempotent: a rewritten model has no such pattern left."""
    sc = flatbuffer.schema()
    loaded = flatbuffer.load_with_ops(content, "CONCATENATION", "FULLY_CONNECTED")
    if loaded is None:
        return content, 0
    model, names = loaded
    done = 0
    for sg, reads, outputs in flatbuffer.subgraphs_with_readers(model):
        names = flatbuffer.op_names(model)  # ADD may have been added for an earlier subgraph
        producer = {int(o): k for k, op in enumerate(sg.operators) for o in op.outputs}
        replace: dict[int, list] = {}
        drop: set[int] = set()
        for k, op in enumerate(sg.operators):
            if names[op.opcodeIndex] != "CONCATENATION" or len(op.inputs) < 2:
                continue
            out = int(op.outputs[0])
            t = sg.tensors[out]
            users = reads.get(out, [])
            rank = len(t.shape) if t.shape is not None else 0
            opts = op.builtinOptions
            if (t.type != flatbuffer.FLOAT32 or out in outputs or len(users) != 1 or rank == 0
                    or opts is None or opts.axis not in (-1, rank - 1) or opts.fusedActivationFunction):
                continue
            fc = sg.operators[users[0]]
            if (names[fc.opcodeIndex] != "FULLY_CONNECTED" or int(fc.inputs[0]) != out or len(fc.outputs) != 1
                    or getattr(fc.builtinOptions, "weightsFormat", 0) != _WEIGHTS_DEFAULT):
                continue
            w = flatbuffer.const(model, sg, int(fc.inputs[1]))
            parts = [int(i) for i in op.inputs]
            widths = [int(sg.tensors[i].shape[-1]) if sg.tensors[i].shape is not None and len(sg.tensors[i].shape)
                      else -1 for i in parts]
            if w is None or w.ndim != 2 or min(widths) <= 0 or sum(widths) != w.shape[1]:
                continue
            if not any(_from_input(sg, names, producer, i) for i in parts):
                continue
            bias = int(fc.inputs[2]) if len(fc.inputs) > 2 else -1
            y = int(fc.outputs[0])
            act = fc.builtinOptions.fusedActivationFunction if fc.builtinOptions is not None else 0
            new_ops, sums, start = [], [], 0
            for j, (part, width) in enumerate(zip(parts, widths)):
                wj = flatbuffer.new_const(model, sg, int(fc.inputs[1]), w[:, start:start + width].copy(), f"/part{j}")
                start += width
                tj = flatbuffer.tensor_like(sg, sg.tensors[y], f"{flatbuffer.tensor_name(sg, y)}/part{j}")
                part_fc = copy.deepcopy(fc)
                part_fc.inputs = np.array([part, wj, bias if j == 0 else -1], np.int32)
                part_fc.outputs = np.array([tj], np.int32)
                if part_fc.builtinOptions is not None:
                    part_fc.builtinOptions.fusedActivationFunction = flatbuffer.NONE
                new_ops.append(part_fc)
                sums.append(tj)
            acc = sums[0]
            for j, tj in enumerate(sums[1:], 1):
                last = j == len(sums) - 1
                dst = (y if last
                       else flatbuffer.tensor_like(sg, sg.tensors[y], f"{flatbuffer.tensor_name(sg, y)}/sum{j}"))
                add = sc.OperatorT()
                add.opcodeIndex = flatbuffer.opcode_index(model, sc.BuiltinOperator.ADD)
                add.inputs, add.outputs = np.array([acc, tj], np.int32), np.array([dst], np.int32)
                add.builtinOptionsType = sc.BuiltinOptions.AddOptions
                add.builtinOptions = sc.AddOptionsT()
                add.builtinOptions.fusedActivationFunction = act if last else flatbuffer.NONE
                new_ops.append(add)
                acc = dst
            drop.add(k)
            replace[users[0]] = new_ops
            done += 1
        if drop:
            ops = []
            for k, op in enumerate(sg.operators):
                if k not in drop:
                    ops.extend(replace.get(k, [op]))
            sg.operators = ops
    return (flatbuffer.dump(model), done) if done else (content, 0)
