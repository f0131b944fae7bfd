"""Nested Keras models -> one flat Functional graph with the same weights and the same outputs.

Nearly every fine-tuned Keras model nests a pretrained base: ``Model(inputs, head(base(inputs)))`` or
``Sequential([base, ...])``. The graph steps (BN folding, equalization, bias correction) and the QAT rewrite
read producer/consumer links between *layers*; a nested model hides its layers behind one node. Flattening
replays the graph with every sub-model's own layers called directly, at any depth, so those steps see
every Conv -> BN -> Conv chain. Layers are copied (from their config, weights set afterwards): the caller's
model is never changed, and a layer called twice stays shared (one copy, called twice).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from edgeq.errors import EdgeqError


class FlattenError(EdgeqError):
    """A model (or a sub-model) cannot be replayed as a flat Functional graph."""


@dataclass
class FlatModel:
    """The flat Functional model and, per flat layer name, the path of the layer it copies."""

    model: object
    origin: dict[str, tuple[str, ...]] = field(default_factory=dict)  # e.g. "base_conv1" -> ("base", "conv1")
    nested: int = 0  # sub-models inlined (all depths)


def _is_model(layer) -> bool:
    import keras

    return isinstance(layer, keras.Model)


def _graph_of(model):
    """The Functional graph behind ``model`` (a Sequential keeps one once it is built)."""
    import keras

    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise FlattenError(f"model '{model.name}' (Sequential): is not built (no input shape); give its first "
                               "layer an input shape or call it once on data before saving")
        return graph
    if not hasattr(model, "_run_through_graph") or not hasattr(model, "_nodes_by_depth"):
        raise FlattenError(f"model '{model.name}' ({type(model).__name__}): is a subclassed model without a layer "
                           "graph; rebuild it as a Functional or Sequential model")
    return model


def _leaf_names(model, path: tuple[str, ...], out: list[tuple[tuple[str, ...], str]]) -> None:
    for layer in _graph_of(model).layers:
        if _is_model(layer):
            _leaf_names(layer, path + (layer.name,), out)
        elif type(layer).__name__ != "InputLayer":
            out.append((path, layer.name))


class _Flattener:
    def __init__(self, model):
        leaves: list[tuple[tuple[str, ...], str]] = []
        _leaf_names(model, (), leaves)
        self.counts = Counter(name for _, name in leaves)
        self.used: set[str] = {name for path, name in leaves if not path}  # outer layers keep their names
        self.copies: dict[int, object] = {}  # id(original layer) -> its copy (shared layers stay shared)
        self.pairs: list[tuple[object, object]] = []
        self.origin: dict[str, tuple[str, ...]] = {}
        self.nested = 0

    def _name(self, path: tuple[str, ...], name: str) -> str:
        if not path or (self.counts[name] == 1 and name not in self.used):
            new = name
        else:
            new = "_".join(path + (name,))  # a clash: the sub-model's name makes it unique and readable
        base, i = new, 1
        while new in self.used and path:
            new, i = f"{base}_{i}", i + 1
        self.used.add(new)
        return new

    def _copy(self, layer, path: tuple[str, ...]):
        key = id(layer)
        if key not in self.copies:
            cfg = layer.get_config()
            cfg["name"] = self._name(path, layer.name)
            try:
                copy = type(layer).from_config(cfg)
            except Exception as exc:  # noqa: BLE001 - a custom layer without a round-tripping config
                raise FlattenError(f"layer '{layer.name}' ({type(layer).__name__}): cannot be copied from its "
                                   f"config ({exc}); register it with keras.saving.register_keras_serializable "
                                   "and implement get_config") from exc
            self.copies[key] = copy
            self.pairs.append((layer, copy))
            self.origin[copy.name] = path + (layer.name,)
        return self.copies[key]

    def run(self, model, inputs, path: tuple[str, ...]):
        """Replay ``model``'s graph on ``inputs``, inlining sub-models; returns its outputs' structure."""
        graph = _graph_of(model)

        def operation_fn(op):
            if _is_model(op):
                self.nested += 1
                sub_path = path + (op.name,)
                # the sub-model's own call kwargs (e.g. training=False) are dropped: its layers get theirs
                return lambda *args, **kwargs: self.run(op, args[0] if len(args) == 1 else list(args), sub_path)
            return self._copy(op, path)

        return graph._run_through_graph(inputs, operation_fn=operation_fn)  # noqa: SLF001 - Keras's own replay


def flatten(model) -> FlatModel:
    """A flat Functional copy of ``model`` (Functional or Sequential, sub-models at any depth inlined).

    Same weights (copied), same outputs within float tolerance; outer layers and inputs keep their names,
    nested layers keep theirs unless they clash (then ``<sub-model>_<layer>``). A model without nesting comes
    back as an independent Functional copy.
    """
    import keras

    graph = _graph_of(model)
    flat = _Flattener(model)
    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)  # noqa: SLF001
              for t in graph.inputs]
    outputs = flat.run(model, inputs if len(inputs) > 1 else inputs[0], ())
    new = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs, name=model.name)
    for original, copy in flat.pairs:
        if original.weights:
            copy.set_weights(original.get_weights())
    return FlatModel(new, flat.origin, flat.nested)


def is_nested(model) -> bool:
    """True when ``model`` has a Functional/Sequential sub-model among its layers."""
    return any(_is_model(layer) for layer in getattr(model, "layers", []))


def copy_back(flat: FlatModel, target) -> int:
    """Copy the flat model's weights into ``target``, a model with the original (nested) architecture.

    Only possible while the flat graph still has the original's layers (before BN folding); returns how many
    layers were copied.
    """
    n = 0
    for layer in flat.model.layers:
        path = flat.origin.get(layer.name)
        if not path or not layer.weights:
            continue
        dst = target
        for name in path:
            dst = dst.get_layer(name)
        dst.set_weights(layer.get_weights())
        n += 1
    return n
