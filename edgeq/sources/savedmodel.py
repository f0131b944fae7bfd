"""SavedModel folders -> FloatModel: used as they are, through their ``serving_default`` signature."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import ModelLoadError, first_line
from edgeq.sources.base import FloatModel, TensorSpec
from edgeq.tfenv import quiet_tf


def _with_fixed_batch(loaded, sig, batch: int) -> Path | None:
    """A temporary SavedModel whose ``serving_default`` is ``sig`` with a dynamic batch fixed to ``batch``
    (None when every input already has a fixed batch)."""
    import contextlib
    import io
    import shutil
    import tempfile

    from edgeq.nativeio import quiet_native_output

    tf = quiet_tf()
    in_specs = sig.structured_input_signature[1]
    if all(v.shape.rank and v.shape[0] is not None for v in in_specs.values()):
        return None
    keys = sorted(in_specs)
    specs = [tf.TensorSpec([batch if in_specs[k].shape[0] is None else in_specs[k].shape[0],
                            *in_specs[k].shape[1:]], in_specs[k].dtype, name=k) for k in keys]

    @tf.function(input_signature=specs)
    def serve(*args):
        return sig(**dict(zip(keys, args)))

    holder = tf.Module()
    holder.loaded = loaded  # tracks the original variables so the new export carries them
    tmp = Path(tempfile.mkdtemp(prefix="edgeq-sm-"))
    try:
        with quiet_native_output(), contextlib.redirect_stdout(io.StringIO()):
            tf.saved_model.save(holder, str(tmp / "saved_model"),
                                signatures={"serving_default": serve.get_concrete_function()})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def load_savedmodel(path: Path, batch: int | None = 1) -> FloatModel:
    """Open a SavedModel folder; its serving signature defines inputs and outputs. ``batch`` fixes a dynamic
    batch dimension (None keeps it), as for every source."""
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

    tmp, note = None, None
    if batch is not None:
        try:
            tmp = _with_fixed_batch(loaded, sig, batch)
        except Exception as exc:  # noqa: BLE001 - a signature that cannot be retraced keeps its dynamic batch
            note = (f"batch kept dynamic: the signature could not be re-exported with batch {batch} "
                    f"({first_line(exc)[:80]})")
    fixed = tmp is not None
    if fixed:
        inputs = [TensorSpec(s.name, (batch if s.shape[0] is None else s.shape[0], *s.shape[1:]), s.dtype)
                  for s in inputs]
    fm = FloatModel(source=path, kind="savedmodel", saved_model_dir=tmp / "saved_model" if fixed else path,
                    inputs=inputs, outputs=outputs, _predict=predict, extra={"loaded": loaded}, _tmpdir=tmp,
                    notes=[note] if note else [])
    fm.batch = batch if fixed else None
    return fm
