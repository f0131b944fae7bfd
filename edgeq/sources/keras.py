"""Keras 3 models (.keras, legacy .h5) -> FloatModel, through Keras' own SavedModel export.

A SavedModel is the one form every later step reads: TFLiteConverter's INT8 path fails on Keras 3
concrete functions but works on an exported SavedModel (see the toolchain notes).
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgeq.errors import ModelLoadError, first_line
from edgeq.nativeio import quiet_native_output
from edgeq.sources.base import FloatModel, TensorSpec
from edgeq.tfenv import quiet_tf


def _spec(t) -> TensorSpec:
    shape = tuple(None if d is None else int(d) for d in t.shape)
    return TensorSpec(name=str(t.name), shape=shape, dtype=str(np.dtype(str(t.dtype))))


def load_keras_model(path: Path):
    """Load a Keras model file without compiling it; corrupt or foreign files raise ModelLoadError."""
    _check_container(Path(path))
    quiet_tf()
    import keras

    try:
        with warnings.catch_warnings():  # a damaged archive also warns per layer; the error below says it once
            warnings.simplefilter("ignore")
            return keras.saving.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors... for bad files
        text = " ".join(str(exc).split())
        if "could not be loaded" in text:
            raise ModelLoadError(f"{path}: its weights do not load (the archive is damaged, or they belong to "
                                 "another model); copy it again or re-save it with model.save('model.keras')") from exc
        if "safe_mode" in text or "Lambda" in text:  # Keras' own advice (safe_mode=False) would run its code
            raise ModelLoadError(f"{path}: holds a Lambda layer (arbitrary Python code), which edgeq does not "
                                 "run; replace it with a registered custom layer and re-save the model") from exc
        if "File not found" in text or "not a zip file" in text.lower():  # Keras' words for a damaged archive
            raise ModelLoadError(f"{path}: the Keras archive is damaged or truncated ({first_line(exc)[:100]}); "
                                 "copy it again or re-save it with model.save('model.keras')") from exc
        raise ModelLoadError(f"{path}: not a loadable Keras model ({first_line(exc)[:160]}); "
                             "re-save it with model.save('model.keras')") from exc


def _check_container(path: Path) -> None:
    """A .keras file is a zip archive and an .h5 an HDF5 file: say so plainly when it is neither."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        why = "truncated (no zip directory at its end)" if head.startswith(b"PK") else "not a zip archive"
        raise ModelLoadError(f"{path}: not a loadable Keras model ({why}); copy it again or re-save it with "
                             "model.save('model.keras')")
    if path.suffix.lower() in (".h5", ".hdf5") and head != b"\x89HDF\r\n\x1a\n":
        raise ModelLoadError(f"{path}: not a loadable Keras model (no HDF5 signature); copy it again or re-save it")


def _dtype(tf, dtype):
    # Keras 3 gives "float32"; a tf.keras that resolves to Keras 2 (once onnx2tf has imported tf_keras) a DType
    return tf.as_dtype(getattr(dtype, "name", None) or str(dtype))


def _static_signature(model, batch: int):
    """Input specs with the batch dimension fixed, or None when every input already has one."""
    tf = quiet_tf()
    if all(t.shape and t.shape[0] is not None for t in model.inputs):
        return None
    specs = [tf.TensorSpec((batch if t.shape[0] is None else t.shape[0], *t.shape[1:]), _dtype(tf, t.dtype),
                           name=str(t.name)) for t in model.inputs]
    return [specs[0]] if len(specs) == 1 else [specs]


def from_keras_object(model, source: Path, batch: int | None = 1) -> FloatModel:
    """Wrap an in-memory Keras model (e.g. a fine-tuned one) as a FloatModel.

    ``batch`` fixes a dynamic batch dimension (None keeps it dynamic): with a static shape, Flatten and
    Reshape need no SHAPE/STRIDED_SLICE/PACK ops and XNNPACK can take the whole graph."""
    signature = _static_signature(model, batch) if batch is not None else None
    inputs = [_spec(t) for t in model.inputs]
    if signature is not None:
        inputs = [TensorSpec(s.name, (batch if s.shape[0] is None else s.shape[0], *s.shape[1:]), s.dtype)
                  for s in inputs]
    outputs = [TensorSpec(name=f"output_{i}", shape=tuple(None if d is None else int(d) for d in t.shape),
                          dtype=str(np.dtype(str(t.dtype)))) for i, t in enumerate(model.outputs)]

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        args = [feeds[s.name] for s in inputs]
        out = model(args[0] if len(args) == 1 else args, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    tmp = Path(tempfile.mkdtemp(prefix="edgeq-sm-"))
    try:
        with quiet_native_output():
            model.export(str(tmp / "saved_model"), format="tf_saved_model", verbose=False,
                         input_signature=signature)
        fm = FloatModel(source=source, kind="keras", saved_model_dir=tmp / "saved_model", inputs=inputs,
                        outputs=outputs, _predict=predict, _tmpdir=tmp, extra={"keras_model": model})
    except BaseException:  # Ctrl-C / SIGTERM / a failed export before the FloatModel that removes it exists
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fm.batch = batch
    return fm


def load_keras(path: Path, batch: int | None = 1) -> FloatModel:
    """Load ``path`` (.keras/.h5) and export it to a temporary SavedModel (batch fixed, see from_keras_object)."""
    return from_keras_object(load_keras_model(path), path, batch)
