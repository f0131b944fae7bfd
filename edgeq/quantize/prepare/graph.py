"""A Keras functional model as a small graph: who feeds whom, and rebuilding with edited configs/weights.

Every preparation step reads and writes weights by layer name; structure changes (a BatchNormalization
becoming an Identity, a conv gaining a bias) go through the model config, so the rebuilt model is an
ordinary Keras model that ``from_keras_object`` exports like any other.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

CONV_LIKE = ("Conv2D", "DepthwiseConv2D", "Dense")


def _history_names(obj, out: list[str]) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(obj["config"]["keras_history"][0])
            return
        for v in obj.values():
            _history_names(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _history_names(v, out)


@dataclass
class Graph:
    """Producer/consumer maps of a functional model (by layer name), plus the model itself."""

    model: object
    config: dict
    producers: dict[str, list[str]]
    consumers: dict[str, list[str]]
    classes: dict[str, str]

    @classmethod
    def of(cls, model) -> "Graph":
        cfg = model.get_config()
        if "layers" not in cfg or "input_layers" not in cfg:
            raise ValueError("not a Keras functional model")
        producers: dict[str, list[str]] = {}
        consumers: dict[str, list[str]] = {entry["name"]: [] for entry in cfg["layers"]}
        for entry in cfg["layers"]:
            names: list[str] = []
            _history_names(entry.get("inbound_nodes", []), names)
            producers[entry["name"]] = names
            for n in names:
                consumers.setdefault(n, []).append(entry["name"])
        outs: list[str] = []
        _history_names(cfg["output_layers"], outs)
        if not outs:  # output_layers as plain [name, node, index] lists
            flat = cfg["output_layers"]
            outs = [flat[0]] if flat and isinstance(flat[0], str) else [o[0] for o in flat]
        for o in outs:
            consumers.setdefault(o, []).append("<output>")
        classes = {entry["name"]: entry["class_name"] for entry in cfg["layers"]}
        return cls(model, cfg, producers, consumers, classes)

    def layer(self, name: str):
        return self.model.get_layer(name)

    def sole_consumer(self, name: str) -> str | None:
        c = self.consumers.get(name, [])
        return c[0] if len(c) == 1 and c[0] != "<output>" else None

    def layer_config(self, name: str) -> dict:
        return next(e for e in self.config["layers"] if e["name"] == name)["config"]


def rebuild(model, edit_config, weights: dict[str, list[np.ndarray]]):
    """A new functional model: ``edit_config(cfg)`` changes the config in place; ``weights`` overrides by name."""
    import keras

    cfg = copy.deepcopy(model.get_config())
    edit_config(cfg)
    new = keras.Model.from_config(cfg)
    for layer in new.layers:
        if layer.name in weights:
            layer.set_weights(weights[layer.name])
        elif layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return new


def clone(model):
    """An independent copy of ``model`` (same config, copied weights)."""
    return rebuild(model, lambda cfg: None, {})


def activations(model, names: list[str], x: np.ndarray, batch: int = 100, of: str = "output"
                ) -> dict[str, np.ndarray]:
    """Outputs (``of="input"``: inputs) of the layers ``names`` on input batch ``x`` (float model, inference
    mode)."""
    import keras

    if not names:
        return {}
    probe = keras.Model(model.inputs, [getattr(model.get_layer(n), of) for n in names])
    outs = [np.asarray(o) for o in _as_list(probe.predict(x, batch_size=batch, verbose=0))]
    return dict(zip(names, outs))


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def kernel_out_axis_view(kind: str, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (..., output channels): depthwise (kh, kw, in, mult) -> (kh, kw, in*mult)."""
    if kind == "DepthwiseConv2D":
        kh, kw, cin, mult = kernel.shape
        return kernel.reshape(kh, kw, cin * mult)
    return kernel
