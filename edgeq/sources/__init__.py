"""Model sources: every input format becomes one :class:`FloatModel` (a SavedModel plus specs).

Keras, SavedModel and ONNX inputs differ only in how they reach that form; calibration, quantization,
reporting and accuracy all work on the FloatModel, so there is one pipeline and one set of bugs.
"""
from __future__ import annotations

from pathlib import Path

from edgeq.errors import ModelLoadError
from edgeq.sources.base import FloatModel, TensorSpec

__all__ = ["FloatModel", "TensorSpec", "load_float_model", "source_kind"]

_KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def source_kind(path: Path) -> str:
    """Name the kind of model at ``path`` ('keras', 'savedmodel', 'onnx', 'tflite') or raise ModelLoadError."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or directory; give a .keras, .h5, .onnx file or a SavedModel folder")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return "savedmodel"
        raise ModelLoadError(f"{path}: folder has no saved_model.pb; give a SavedModel folder or a model file")
    if not path.is_file():  # a FIFO or device would block or read as "empty"
        raise ModelLoadError(f"{path}: not a regular file (a device, FIFO or socket); give the model file")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path}: file is empty; re-export the model")
    suffix = path.suffix.lower()
    if suffix in _KERAS_SUFFIXES:
        return "keras"
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".tflite":
        return "tflite"
    raise ModelLoadError(f"{path}: unknown model format '{suffix}'; expected .keras, .h5, .onnx, a float .tflite "
                         "or a SavedModel folder")


def load_float_model(path: Path, batch: int | None = 1, **options) -> FloatModel:
    """Load any supported source into a :class:`FloatModel`. Use it as a context manager.

    ``batch`` fixes a dynamic batch dimension (default 1, what a deployed model runs; None keeps it
    dynamic): static shapes let XNNPACK take Flatten/Reshape models whole."""
    kind = source_kind(Path(path))
    if kind == "keras":
        from edgeq.sources.keras import load_keras

        return load_keras(Path(path), batch)
    if kind == "tflite":
        from edgeq.sources.tflite import load_tflite

        return load_tflite(Path(path))
    if kind == "savedmodel":
        from edgeq.sources.savedmodel import load_savedmodel

        return load_savedmodel(Path(path), batch)
    from edgeq.extras import require

    require("onnx", "onnxruntime", "onnx2tf", "tf_keras")  # the edgeq[onnx] extra, before any import of it
    from edgeq.sources.onnx import load_onnx  # noqa: PLC0415 - optional heavy dependency

    return load_onnx(Path(path), batch=batch, **options)
