"""BatchNormalization folding: ``conv -> BN`` becomes one conv with a bias (the BN layer an Identity).

TFLiteConverter folds BN itself, so folding alone changes nothing in the INT8 model; it exists so that
equalization and bias correction see the weights the converter will actually quantize.
"""
from __future__ import annotations

import numpy as np

from edgeq.quantize.prepare.graph import CONV_LIKE, Graph, rebuild

# SeparableConv2D folds too: the converter lowers it to DEPTHWISE_CONV_2D + a 1x1 CONV_2D, and the BN goes into
# that pointwise conv (kernel and bias), the depthwise part unchanged. It is not in CONV_LIKE, which the other
# steps (equalization, bias correction) use for layers they know how to edit.
FOLDS_INTO = CONV_LIKE + ("SeparableConv2D",)


def _bn_scale_shift(bn) -> tuple[np.ndarray, np.ndarray]:
    w = {v.path.split("/")[-1]: np.asarray(v) for v in bn.weights}
    var, mean = w["moving_variance"], w["moving_mean"]
    gamma = w.get("gamma", np.ones_like(var))
    beta = w.get("beta", np.zeros_like(var))
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale.astype(np.float32), (beta - mean * scale).astype(np.float32)


def foldable_pairs(g: Graph) -> list[tuple[str, str]]:
    """(conv, bn) pairs where the BN is the conv's only reader, normalizes the last axis, and the conv is linear."""
    pairs = []
    for name, cls in g.classes.items():
        if cls != "BatchNormalization":
            continue
        prod = g.producers[name]
        if len(prod) != 1 or g.classes.get(prod[0]) not in FOLDS_INTO or g.sole_consumer(prod[0]) != name:
            continue
        bn_cfg, conv_cfg = g.layer_config(name), g.layer_config(prod[0])
        axis = bn_cfg.get("axis", -1)
        if axis not in (-1, [-1], len(g.layer(name).input.shape) - 1, [len(g.layer(name).input.shape) - 1]):
            continue
        if conv_cfg.get("activation", "linear") != "linear":
            continue
        pairs.append((prod[0], name))
    return pairs


def fold_batchnorm(model) -> tuple[object, int]:
    """A copy of ``model`` with every foldable BN folded into its conv; returns (model, number folded)."""
    g = Graph.of(model)
    pairs = foldable_pairs(g)
    if not pairs:
        return model, 0
    weights: dict[str, list[np.ndarray]] = {}
    for conv_name, bn_name in pairs:
        conv = g.layer(conv_name)
        kind = g.classes[conv_name]
        kernel = np.asarray(conv.pointwise_kernel if kind == "SeparableConv2D" else conv.kernel)
        channels = kernel.shape[2] * kernel.shape[3] if kind == "DepthwiseConv2D" else kernel.shape[-1]
        bias = np.asarray(conv.bias) if conv.use_bias else np.zeros(channels, np.float32)
        scale, shift = _bn_scale_shift(g.layer(bn_name))
        if kind == "DepthwiseConv2D":
            kh, kw, cin, mult = kernel.shape
            kernel = kernel * scale.reshape(cin, mult)
        else:
            kernel = kernel * scale
        folded_wb = [kernel.astype(np.float32), (bias * scale + shift).astype(np.float32)]
        # SeparableConv2D's weights are [depthwise, pointwise, bias]: the depthwise kernel stays as it is
        weights[conv_name] = ([np.asarray(conv.depthwise_kernel, np.float32)] if kind == "SeparableConv2D" else []) \
            + folded_wb
    folded = {c for c, _ in pairs}
    bns = {b for _, b in pairs}

    def edit(cfg: dict) -> None:
        for entry in cfg["layers"]:
            if entry["name"] in folded:
                entry["config"]["use_bias"] = True
            elif entry["name"] in bns:
                old = entry["config"]
                entry.update(module="keras.layers", class_name="Identity", registered_name=None)
                entry["config"] = {"name": old["name"], "trainable": old.get("trainable", True), "dtype": old.get("dtype")}
                for node in entry.get("inbound_nodes", []):  # BN's call kwargs (training, mask) mean nothing now
                    if isinstance(node, dict):
                        node["kwargs"] = {}

    return rebuild(model, edit, weights), len(pairs)
