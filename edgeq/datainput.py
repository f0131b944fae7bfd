"""In-memory data for the library: numpy arrays, dicts of arrays, (x, y) tuples, iterables of samples or
batches, and ``tf.data.Dataset`` objects, turned into the same arrays a .npz file gives.

Files stay :mod:`edgeq.data`'s business; this module only gathers what a Python caller holds, so that
every later check (shape, dtype, NaN, layout) is the same for both and names the argument at fault.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from edgeq.errors import DataError
from edgeq.sources.base import TensorSpec

LABEL_KEYS = ("y", "labels", "label")

DataLike = Any
"""What a data argument takes: a path (str/PathLike: .npy, .npz, image folder), a numpy array (inputs of a
single-input model), a dict of arrays (one per input name; ``"y"`` holds labels), an ``(x, y)`` tuple, an
iterable/generator yielding any of those per sample or per batch, or a ``tf.data.Dataset`` yielding them."""


class Replayable(list):
    """The samples of a one-shot iterator (a generator), kept so they can be read more than once (float and
    converted model, several variants) and still described as what the caller gave."""

    def __init__(self, iterator: Iterable) -> None:
        super().__init__(iterator)
        self.kind = type(iterator).__name__


def replayable(data: Any) -> Any:
    """``data``, with a generator/iterator read once into a :class:`Replayable`; everything else as is."""
    return Replayable(data) if isinstance(data, Iterator) else data


def is_path(data: object) -> bool:
    """True for file-system paths (what the CLI gives); everything else is in-memory data."""
    return isinstance(data, (str, os.PathLike))


def describe(data: object) -> str:
    """A short name for in-memory data, used in error messages: ``numpy array``, ``tf.data.Dataset`` ..."""
    if isinstance(data, np.ndarray):
        return "numpy array"
    if isinstance(data, Mapping):
        return "dict of arrays"
    if isinstance(data, tuple):
        return "(x, y) tuple"
    if _is_tf_dataset(data):
        return "tf.data.Dataset"
    return data.kind if isinstance(data, Replayable) else type(data).__name__


def _is_tf_dataset(data: object) -> bool:
    # Checked by type name: importing TensorFlow just to ask would cost seconds for every caller.
    return type(data).__module__.startswith("tensorflow") and hasattr(data, "as_numpy_iterator")


def gather(data: DataLike, specs: list[TensorSpec], where: str,
           limit: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Inputs (name or ``"x"`` -> batch) and labels (or None) from in-memory ``data``.

    Iterables are read only up to ``limit`` samples, so an endless ``tf.data`` pipeline (``.repeat()``)
    works when a sample cap is given. ``where`` names the argument in errors.
    """
    if isinstance(data, (np.ndarray, Mapping, tuple)) or _is_array_like(data):
        return _split(data, where)
    if _is_tf_dataset(data):
        elements = data.as_numpy_iterator()
    elif isinstance(data, Iterable) and not isinstance(data, (bytes, str)):
        elements = iter(data)
    else:
        raise DataError(f"{where}: cannot read a {type(data).__name__}; give a path, numpy arrays (or a dict of "
                        "them per input), an iterable of samples or a tf.data.Dataset")
    return _collect(elements, specs, where, limit)


def _is_array_like(data: object) -> bool:
    # tf.Tensor, torch tensors, jax arrays: anything numpy can take without copying element by element
    return hasattr(data, "__array__") and not isinstance(data, (list, tuple, Mapping))


def _split(element: Any, where: str) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """One array / dict / (x, y) tuple -> (inputs, labels)."""
    if isinstance(element, tuple):
        if len(element) == 1:
            return _split(element[0], where)
        if len(element) != 2:
            raise DataError(f"{where}: a tuple must be (x, y) or (x,); got {len(element)} items")
        inputs, labels = _split(element[0], where)
        if labels is not None:
            raise DataError(f"{where}: labels given twice (in the x dict and as y); give them once")
        return inputs, np.asarray(element[1])
    if isinstance(element, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in element.items()}
        labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
        if not arrays:
            raise DataError(f"{where}: the dict holds no input arrays; key them by input name (or 'x')")
        return arrays, labels
    try:
        return {"x": np.asarray(element)}, None
    except Exception as exc:  # noqa: BLE001 - ragged lists and foreign objects: say which argument
        raise DataError(f"{where}: not convertible to a numpy array ({exc})") from None


def _collect(elements, specs: list[TensorSpec], where: str,
             limit: int | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Concatenate per-sample or per-batch elements; each element's rank says which it is."""
    parts: dict[str, list[np.ndarray]] = {}
    label_parts: list[np.ndarray] = []
    count = 0
    for i, element in enumerate(elements):
        inputs, labels = _split(element, f"{where} (element {i})")
        n = None
        for key, arr in inputs.items():
            spec = _spec_for(key, specs)
            batch = _as_batch(arr, spec)
            n = len(batch) if n is None else n
            parts.setdefault(key, []).append(batch)
        if labels is not None:
            label_parts.append(labels.reshape(1, *labels.shape) if _is_single(inputs, specs) else labels)
        elif label_parts:
            raise DataError(f"{where}: element {i} has no label but earlier ones do; label every sample or none")
        count += n or 0
        if limit is not None and count >= limit:
            break
    if not parts:
        raise DataError(f"{where}: yielded no samples; give at least one")
    for key, v in parts.items():
        shapes = list(dict.fromkeys(tuple(a.shape[1:]) for a in v))
        if len(shapes) > 1:
            raise DataError(f"{where}: samples of '{key}' differ in shape ({shapes[0]} and {shapes[1]}); give every "
                            "sample the model's input shape")
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    try:
        labels = np.concatenate(label_parts) if label_parts else None
    except ValueError:
        raise DataError(f"{where}: labels differ in shape between elements; give one integer per sample") from None
    return arrays, labels


def _spec_for(key: str, specs: list[TensorSpec]) -> TensorSpec | None:
    match = [s for s in specs if s.name == key]
    return match[0] if match else (specs[0] if len(specs) == 1 else None)


def _as_batch(arr: np.ndarray, spec: TensorSpec | None) -> np.ndarray:
    """``arr`` with a batch axis: a single sample (one axis fewer than the model input) gets one."""
    return arr[None] if _single(arr, spec) else arr


def _single(arr: np.ndarray, spec: TensorSpec | None) -> bool:
    if spec is None:
        return False
    rank = len(spec.shape)
    if arr.ndim >= rank:
        return False
    if rank == 4 and spec.shape[-1] == 1 and arr.ndim == 3 and tuple(arr.shape[1:]) == tuple(spec.shape[1:3]):
        return False  # a batch of grayscale images without the channel axis
    return True


def _is_single(inputs: dict[str, np.ndarray], specs: list[TensorSpec]) -> bool:
    key, arr = next(iter(inputs.items()))
    return _single(arr, _spec_for(key, specs))
