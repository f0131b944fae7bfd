"""Float Keras model -> the same graph with simulated INT8 (what TFLite will run), sharing the float weights.

The rewrite first inlines nested Functional/Sequential sub-models (quantize/prepare/flatten.py), then walks
the flat graph from the outputs back to the inputs and groups layers the way TFLiteConverter fuses them:
Conv2D/DepthwiseConv2D/SeparableConv2D/Dense + BatchNormalization + ReLU/ReLU6 become one quantized op, Add +
ReLU another; sigmoid/tanh/swish/hard_swish are their own op after it, as TFLite runs them.
Layers that keep their input's scale in TFLite (pooling by max, reshapes, dropout, padding) pass through;
layers that make a new tensor range (Add, Concatenate, average pooling, a standalone ReLU) get an
activation quantizer after them. Any other layer is refused by name, before any training starts.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field

from edgeq.errors import EdgeqError
from edgeq.qat.layers import (FIXED_RANGE, STANDALONE, ActivationQuantizer,  # imports TensorFlow quietly, first
                              FoldedQuantLayer, SimulatedActivation, SoftmaxOutputRange)
from edgeq.quantize.prepare.flatten import FlatModel, FlattenError, flatten

import keras  # noqa: E402

class UnsupportedLayerError(EdgeqError):
    """The model has a layer the QAT rewrite cannot simulate."""

WEIGHTED = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
# Same scale in and out in TFLite (or no op at all at inference): no quantizer of their own.
PASS_THROUGH = ("MaxPooling2D", "MaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling1D", "Flatten", "Reshape",
                "Dropout", "SpatialDropout2D", "ZeroPadding2D", "Identity", "UpSampling2D", "Resizing")
# A new range after them.
NEW_RANGE = ("Add", "Multiply", "Concatenate", "AveragePooling2D", "GlobalAveragePooling2D",
             "GlobalAveragePooling1D", "LeakyReLU", "PReLU")
SUPPORTED = WEIGHTED + ("BatchNormalization", "ReLU", "Activation", "Softmax", "InputLayer") + PASS_THROUGH \
    + NEW_RANGE
_SUPPORTED_TEXT = ("Conv2D, DepthwiseConv2D, SeparableConv2D, Dense, BatchNormalization, ReLU/ReLU6, LeakyReLU, "
                   "PReLU, Activation(relu|relu6|sigmoid|tanh|swish|hard_swish|softmax), Add, Multiply, "
                   "Concatenate, pooling, UpSampling2D/Resizing, Flatten, Reshape, Dropout and nested "
                   "Functional/Sequential models")

@dataclass
class QATModel:
    """The fake-quant training model and the float model whose variables it trains."""

    model: keras.Model  # with fake quantization: train and export this one
    float_model: keras.Model  # the input, flattened; holds the fine-tuned weights after training
    fused: list[str] = field(default_factory=list)  # e.g. "stem+stem_bn+stem_relu6"
    output_activation: str | None = None  # 'softmax' when the (first) output is probabilities
    output_activations: list[str | None] = field(default_factory=list)  # one per output head
    flat: FlatModel | None = None  # how the flat float model maps back to a nested input

    def quantizers(self) -> list[ActivationQuantizer]:
        return [q for q in _walk_layers(self.model) if isinstance(q, ActivationQuantizer)]

def _walk_layers(layer):
    for sub in getattr(layer, "_layers", []) or getattr(layer, "layers", []):
        yield sub
        yield from _walk_layers(sub)

def activation_name(layer) -> str | None:
    """'relu', 'relu6', 'softmax', None (linear), or '?<name>' for anything the rewrite cannot simulate."""
    cls = type(layer).__name__
    if cls == "ReLU":
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return "?leaky ReLU"
        mv = layer.max_value
        return "relu" if mv is None else ("relu6" if float(mv) == 6.0 else f"?ReLU(max_value={mv})")
    if cls == "Softmax":
        return "softmax"
    fn = getattr(layer, "activation", None)
    if fn is None:
        return None
    name = keras.activations.serialize(fn)
    name = name if isinstance(name, str) else str(name.get("config", name))
    if name == "linear":
        return None
    name = {"silu": "swish", "hard_silu": "hard_swish"}.get(name, name)
    return name if name in ("relu", "relu6", "softmax") + STANDALONE else f"?{name}"

def _refuse(layer, why: str) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"layer '{layer.name}' ({type(layer).__name__}): {why}; edgeq qat supports {_SUPPORTED_TEXT}: replace "
        "the layer, or use 'edgeq convert --mode int8' (post-training) or --mode int8-fallback")

class _Rewriter:
    def __init__(self, model: keras.Model, ema: float):
        self.model = model
        self.ema = ema
        self.memo: dict[int, object] = {}
        self.consumers: dict[int, list] = {}
        self.fused: list[str] = []
        for layer in model.layers:  # flat: rewrite() inlines nested models first
            name = type(layer).__name__
            if name not in SUPPORTED:
                raise _refuse(layer, "has no INT8 simulation")
            for node in layer._inbound_nodes:  # noqa: SLF001 - Keras keeps the graph only here
                for t in node.input_tensors:
                    self.consumers.setdefault(id(t), []).append(node.operation)
        for t in model.outputs:
            self.consumers.setdefault(id(t), []).append(None)  # a model output cannot be fused away

    def _sole_consumer(self, t):
        users = self.consumers.get(id(t), [])
        return users[0] if len(users) == 1 else None

    def _follow(self, t, *, bn: bool):
        """Layers after ``t`` that fuse into its producer: (bn, activation layer, output tensor)."""
        bn_layer = act_layer = None
        nxt = self._sole_consumer(t)
        if bn and nxt is not None and type(nxt).__name__ == "BatchNormalization" and len(nxt._inbound_nodes) == 1:
            bn_layer, t = nxt, nxt._inbound_nodes[0].output_tensors[0]  # noqa: SLF001
            nxt = self._sole_consumer(t)
        # An Identity (what BN folding leaves of a folded BatchNormalization) is skipped: the converter drops it
        # and fuses the ReLU after it into the conv, so the simulation must not put a range before that ReLU.
        while nxt is not None and type(nxt).__name__ == "Identity" and len(nxt._inbound_nodes) == 1:  # noqa: SLF001
            t = nxt._inbound_nodes[0].output_tensors[0]  # noqa: SLF001
            nxt = self._sole_consumer(t)
        if nxt is not None and type(nxt).__name__ in ("ReLU", "Activation") and \
                activation_name(nxt) in ("relu", "relu6") and len(nxt._inbound_nodes) == 1:  # noqa: SLF001
            act_layer, t = nxt, nxt._inbound_nodes[0].output_tensors[0]  # noqa: SLF001
        return bn_layer, act_layer, t

    def _quantizer(self, name: str) -> ActivationQuantizer:
        return ActivationQuantizer(ema=self.ema, name=f"{name}_quant")

    def build(self) -> keras.Model:
        self.fusion_of: dict[int, tuple] = {}
        for layer in self.model.layers:
            name = type(layer).__name__
            if name in WEIGHTED or name == "Add":
                act = activation_name(layer)
                if act is not None and act.startswith("?"):
                    raise _refuse(layer, f"activation '{act[1:]}' has no INT8 simulation")
                own_act = act if act in ("relu", "relu6") else None
                post_act = act if act in STANDALONE else None  # its own op after the conv, as in TFLite
                for node in layer._inbound_nodes:  # noqa: SLF001
                    out = node.output_tensors[0]
                    bn = act_layer = None
                    if act is None:
                        bn, act_layer, out = self._follow(out, bn=name in WEIGHTED)
                    fused_act = activation_name(act_layer) if act_layer is not None else own_act
                    self.fusion_of[id(out)] = (layer, node, bn, act_layer, fused_act, act == "softmax", post_act)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20000))
        try:
            inputs = []
            for t in self.model.inputs:  # the raw inputs, each followed by its quantizer (the int8 input scale)
                layer = t._keras_history.operation  # noqa: SLF001
                raw = keras.Input(batch_shape=t.shape, dtype=t.dtype, name=layer.name)
                self.memo[id(t)] = self._quantizer(layer.name)(raw)
                inputs.append(raw)
            outputs = [self._tensor(t) for t in self.model.outputs]
        finally:
            sys.setrecursionlimit(limit)
        return keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                           name=f"{self.model.name}_qat")

    def _tensor(self, t):
        key = id(t)
        if key not in self.memo:
            self.memo[key] = self._make(t)
        return self.memo[key]

    def _make(self, t):
        hist = t._keras_history  # noqa: SLF001
        layer = hist.operation
        name = type(layer).__name__
        node = layer._inbound_nodes[hist.node_index]  # noqa: SLF001
        if id(t) in self.fusion_of:
            core, node, bn, act_layer, act, softmax, post_act = self.fusion_of[id(t)]
            args = [self._tensor(x) for x in node.input_tensors]
            parts = [core.name] + [x.name for x in (bn, act_layer) if x is not None]
            self.fused.append("+".join(parts))
            if type(core).__name__ == "Add":
                y = keras.layers.Add(name=f"{core.name}_q")(args)
                if act is not None:
                    y = keras.layers.ReLU(max_value=6.0 if act == "relu6" else None, name=f"{core.name}_{act}")(y)
                return self._quantizer(core.name)(y)
            if len(args) != 1:
                raise _refuse(core, "is called with several inputs")
            y = FoldedQuantLayer(core, bn, act, ema=self.ema, name=f"{core.name}_q")(args[0])
            if post_act is not None:
                return self._activation(post_act, y, f"{core.name}_{post_act}")
            if softmax:
                return SoftmaxOutputRange(name=f"{core.name}_softmax_q")(
                    keras.layers.Softmax(name=f"{core.name}_softmax")(y))
            return y
        if name == "BatchNormalization":
            raise _refuse(layer, "does not directly follow a Conv2D, DepthwiseConv2D or Dense layer whose only "
                                 "consumer it is, so it cannot be folded")
        args = keras.tree.map_structure(
            lambda a: self._tensor(a) if isinstance(a, keras.KerasTensor) else a, node.arguments.args)
        kwargs = keras.tree.map_structure(
            lambda a: self._tensor(a) if isinstance(a, keras.KerasTensor) else a, node.arguments.kwargs)
        if name in ("ReLU", "Activation", "Softmax"):
            act = activation_name(layer)
            if act is not None and act.startswith("?"):
                raise _refuse(layer, f"activation '{act[1:]}' has no INT8 simulation")
            if act in STANDALONE:
                return self._activation(act, args[0], layer.name)
        # a weightless layer gets a new instance (keeps the graphs apart); PReLU's alpha is shared and trained
        op = layer if layer.weights else type(layer).from_config(layer.get_config())
        y = op(*args, **kwargs)
        if name in PASS_THROUGH:
            return y
        if name in ("ReLU", "Activation", "Softmax"):
            act = activation_name(layer)
            if act == "softmax":  # TFLite fixes softmax output to scale 1/256: no range to learn, but the grid
                return SoftmaxOutputRange(name=f"{layer.name}_q")(y)
            if act is None:
                return y
        return self._quantizer(layer.name)(y)

    def _activation(self, act: str, x, name: str):
        """sigmoid/tanh/swish/hard_swish as their own simulated op; a learned range unless TFLite fixes it."""
        y = SimulatedActivation(act, name=f"{name}_sim")(x)
        return y if act in FIXED_RANGE else self._quantizer(name)(y)

def output_activations(model: keras.Model) -> list[str | None]:
    """Per output: 'softmax', 'sigmoid', ... of the layer that makes it (decides the distillation loss)."""
    acts = []
    for t in model.outputs:
        act = activation_name(t._keras_history.operation)  # noqa: SLF001
        acts.append(None if act is None or act.startswith("?") else act)
    return acts

def rewrite(model: keras.Model, ema: float = 0.99) -> QATModel:
    """Build the fake-quant model of ``model`` (which is left untouched).

    Nested Functional/Sequential sub-models are inlined first (a flat copy holds the weights that train).
    """
    try:
        flat = flatten(model)
    except FlattenError as exc:
        raise UnsupportedLayerError(str(exc)) from exc
    rw = _Rewriter(flat.model, ema)
    qat = rw.build()
    acts = output_activations(flat.model)
    return QATModel(model=qat, float_model=flat.model, fused=rw.fused, output_activation=acts[0],
                    output_activations=acts, flat=flat)
