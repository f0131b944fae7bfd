"""The float graph every source becomes."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for a dynamic dimension) and dtype of a model input or output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str  # numpy dtype name, e.g. 'float32', 'int64'

    def describe(self) -> str:
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name} [{dims}] {self.dtype}"


@dataclass
class FloatModel:
    """A float model as a SavedModel folder with a ``serving_default`` signature.

    ``predict`` runs the *source* model itself (Keras, TF or onnxruntime) and is the float reference
    for accuracy. Inputs are always fed in TFLite layout (NHWC); a source that wants another layout
    transposes inside its ``predict``.
    """

    source: Path
    kind: str
    saved_model_dir: Path | None  # None for a float .tflite source (then ``float_tflite`` holds it)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    _predict: Callable[[dict[str, np.ndarray]], list[np.ndarray]]
    notes: list[str] = field(default_factory=list)  # things the report should say (e.g. layout changes)
    _tmpdir: Path | None = None
    extra: dict = field(default_factory=dict)  # source-specific facts for reports (e.g. ONNX fidelity)
    # the float flatbuffer itself, when there is no TensorFlow graph (or int8 must quantize the flatbuffer)
    float_tflite: bytes | None = None
    batch: int | None = None  # the batch size the graph was fixed to (None: dynamic, as the source had it)

    def predict(self, feeds: dict[str, np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """Run the float source model on ``feeds`` (input name -> batch) in batches; outputs in order."""
        n = len(next(iter(feeds.values())))
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, batch_size):
            chunks.append(self._predict({k: v[start:start + batch_size] for k, v in feeds.items()}))
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]

    def close(self) -> None:
        """Remove the temporary SavedModel export, if this object made one."""
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "FloatModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
