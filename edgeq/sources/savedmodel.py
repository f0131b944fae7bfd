"""SavedModel folders -> FloatModel: used as they are, through their ``serving_default`` signature."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import ModelLoadError, first_line
from edgeq.sources.base import FloatModel, TensorSpec
from edgeq.tfenv import quiet_tf


def load_savedmodel(path: Path) -> FloatModel:
    """Open a SavedModel folder; its serving signature defines inputs and outputs."""
    tf = quiet_tf()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a loadable SavedModel ({first_line(exc)[:160]}); re-export it") from exc
    sig = getattr(loaded, "signatures", {}).get("serving_default")
    if sig is None:
        raise ModelLoadError(f"{path}: SavedModel has no 'serving_default' signature; export it with one")
    in_specs = sig.structured_input_signature[1]
    inputs = [TensorSpec(name=k, shape=tuple(None if d is None else int(d) for d in v.shape.as_list()),
                         dtype=v.dtype.as_numpy_dtype.__name__) for k, v in sorted(in_specs.items())]
    out_specs = sig.structured_outputs
    out_names = sorted(out_specs)
    outputs = [TensorSpec(name=k, shape=tuple(None if d is None else int(d) for d in out_specs[k].shape.as_list()),
                          dtype=out_specs[k].dtype.as_numpy_dtype.__name__) for k in out_names]

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        res = sig(**{k: tf.constant(v) for k, v in feeds.items()})
        return [res[k].numpy() for k in out_names]

    return FloatModel(source=path, kind="savedmodel", saved_model_dir=path, inputs=inputs, outputs=outputs,
                      _predict=predict, extra={"loaded": loaded})
