"""Calibration and evaluation data: .npy, .npz, a folder of images, or in-memory data (numpy arrays,
iterables, ``tf.data``; see :mod:`edgeq.datainput`) -> arrays that fit the model.

Arrays come out in the model's (TFLite, NHWC) layout and dtype. Every check that fails names the file
and the array or input, and says what to do, because bad data is the most common reason an INT8
model is silently wrong.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.datainput import LABEL_KEYS, DataLike, describe, gather, is_path
from edgeq.errors import DataError
from edgeq.modes import Layout, Preprocess
from edgeq.sources.base import TensorSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclass
class Dataset:
    """Model inputs (name -> batch, model layout and dtype) and optional integer labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: Path
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, n: int | None) -> "Dataset":
        """The first ``n`` samples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        return Dataset({k: v[:n] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[:n], self.source, list(self.notes))

    def check_labels(self, classes: int | None) -> None:
        """Refuse labels that are not class ids of a model with ``classes`` outputs: top-1 against them
        would be a plausible-looking wrong number. ``None`` (unknown class count) checks nothing."""
        if self.labels is None or not classes:
            return
        bad = (self.labels < 0) | (self.labels >= classes)
        if bad.any():
            first = int(np.argmax(bad))
            raise DataError(f"{self.source}: label {int(self.labels[first])} at sample {first} is not a class id "
                            f"of the model's {classes} outputs; give labels 0..{classes - 1}")

    def samples(self):
        """Yield one sample at a time as name -> array with a batch axis of 1."""
        for i in range(len(self)):
            yield {k: v[i:i + 1] for k, v in self.inputs.items()}


def load_dataset(path: DataLike, specs: list[TensorSpec], *, preprocess: Preprocess | None = None,
                 limit: int | None = None, layout: Layout | None = None, require_labels: bool = False,
                 name: str = "data") -> Dataset:
    """Read ``path`` (a file or folder, or in-memory data) and check it against the model inputs ``specs``.

    ``layout`` forces how 4-D image arrays are read; by default NHWC, and an array that only fits as
    NCHW is transposed (and a note says so). ``name`` is the argument errors about in-memory data name.
    In-memory data is never preprocessed: give it exactly as the model takes it.
    """
    if not is_path(path):
        where = f"{name} ({describe(path)})"
        arrays, labels = gather(path, specs, where, limit)
        return _checked(Path(where), arrays, labels, specs, layout, require_labels, limit)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory; give a .npy, .npz or a folder of images")
    if path.is_dir():
        arrays, labels = _read_image_folder(path, specs, preprocess or Preprocess())
    elif path.suffix.lower() == ".npy":
        arrays, labels = {"x": _read_npy(path)}, None
    elif path.suffix.lower() == ".npz":
        arrays, labels = _read_npz(path)
    else:
        raise DataError(f"{path}: unknown data format '{path.suffix}'; use .npy, .npz or a folder of images")
    return _checked(path, arrays, labels, specs, layout, require_labels, limit)


def _checked(path: Path, arrays: dict[str, np.ndarray], labels: np.ndarray | None, specs: list[TensorSpec],
             layout: Layout | None, require_labels: bool, limit: int | None) -> Dataset:
    """Match arrays to inputs, fit dtype/shape/layout, validate labels: the same for files and memory."""
    inputs = _match_inputs(path, arrays, specs)
    notes: list[str] = []
    for spec in specs:
        inputs[spec.name] = _fit(path, spec, inputs[spec.name], layout, notes)
    n = {len(v) for v in inputs.values()}
    if len(n) != 1:
        raise DataError(f"{path}: arrays have different sample counts {sorted(n)}; give every input the same number")
    count = n.pop()
    if count == 0:
        raise DataError(f"{path}: has no samples; give at least one")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[1] > 1:  # one-hot
            labels = labels.argmax(-1)
        labels = labels.reshape(-1)
        if len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: labels must be {count} integers (one per sample); got {labels.dtype} "
                            f"x {len(labels)}")
    if require_labels and labels is None:
        raise DataError(f"{path}: has no labels; add an integer array 'y' (to the .npz, or as y / the 'y' key)")
    ds = Dataset(inputs, labels, path, notes)
    return ds.take(limit)


def check_numpy_file(path: Path, what: str = "") -> None:
    """Refuse a file that is neither a .npz (zip) nor a .npy before numpy reads it: numpy calls anything
    else "pickled data", which sends users looking for pickles in a truncated or mislabeled file."""
    path = Path(path)
    where = f"{what} {path}".strip()
    if not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise DataError(f"{where}: {kind}; give a .npz or .npy file")
    with open(path, "rb") as f:
        head = f.read(6)
    if not head:
        raise DataError(f"{where}: file is empty; save the data again with numpy.savez")
    if not (head.startswith(b"PK") or head == b"\x93NUMPY"):
        raise DataError(f"{where}: neither a .npz (zip) nor a .npy file (it starts with {head[:4]!r}); "
                        "save the data with numpy.savez")


def _read_npy(path: Path) -> np.ndarray:
    check_numpy_file(path)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc}); save it with numpy.save") from exc


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    check_numpy_file(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc}); save it with numpy.savez") from exc
    labels = next((arrays.pop(k) for k in LABEL_KEYS if k in arrays), None)
    if not arrays:
        raise DataError(f"{path}: holds no input arrays; store the inputs as 'x' (or by input name)")
    return arrays, labels


def _match_inputs(path: Path, arrays: dict[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    if all(n in arrays for n in names):
        return {n: arrays[n] for n in names}
    if len(specs) == 1 and len(arrays) == 1:
        return {names[0]: next(iter(arrays.values()))}
    if len(specs) == 1 and "x" in arrays:
        return {names[0]: arrays["x"]}
    missing = [n for n in names if n not in arrays]
    raise DataError(f"{path}: no array for input(s) {', '.join(missing)}; the file has {', '.join(sorted(arrays))}. "
                    "Store one array per input name")


def _fit(path: Path, spec: TensorSpec, a: np.ndarray, layout: Layout | None, notes: list[str]) -> np.ndarray:
    where = f"{path}: array for input '{spec.name}'"
    a = np.asarray(a)
    want = np.dtype(spec.dtype)
    if a.dtype.kind not in "biuf":
        raise DataError(f"{where} has dtype {a.dtype}; give numbers ({want})")
    if want.kind == "f":
        if a.dtype.kind != "f":
            raise DataError(f"{where} is {a.dtype} but the input is {want}; convert it to {want} in the range "
                            "the model expects (e.g. x / 255.0)")
        if not np.all(np.isfinite(a)):
            bad = int(np.nonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))[0][0])
            raise DataError(f"{where} contains NaN or Inf (first at sample {bad}); clean or drop those samples")
    elif a.dtype.kind == "f":
        raise DataError(f"{where} is {a.dtype} but the input is {want} (e.g. token ids); give integers")
    a = a.astype(want, copy=False)
    a = _fit_shape(where, spec, a, layout, notes)
    return np.ascontiguousarray(a)


def _fit_shape(where: str, spec: TensorSpec, a: np.ndarray, layout: Layout | None,
               notes: list[str]) -> np.ndarray:
    want = spec.shape
    expected = "(N," + ",".join("?" if d is None else str(d) for d in want[1:]) + ")"
    if a.ndim == len(want) - 1 and len(want) == 4 and want[-1] == 1:
        a = a[..., None]  # grayscale images stored without a channel axis
    if a.ndim != len(want):
        raise DataError(f"{where} has shape {a.shape} but the model expects {expected}; reshape the data")
    fits = lambda shape: all(w is None or w == d for w, d in zip(want[1:], shape[1:]))  # noqa: E731
    if a.ndim >= 3:  # channel-first data for a model that takes it channel-last (onnx2tf: NCHW->NHWC, NCW->NWC)
        last = (0, *range(2, a.ndim), 1)
        moved = tuple(a.shape[i] for i in last)
        if (layout is Layout.NCHW and a.ndim == 4) or (layout is None and not fits(a.shape) and fits(moved)):
            if not fits(moved):
                raise DataError(f"{where} has shape {a.shape}, which read as NCHW does not fit the model's "
                                f"NHWC {expected}; check `layout`")
            first, chlast = ("NCHW", "NHWC") if a.ndim == 4 else ("channel-first", "channel-last")
            notes.append(f"input '{spec.name}': data given as {first} {tuple(a.shape)}, transposed to {chlast}")
            return a.transpose(last)
    if not fits(a.shape):
        raise DataError(f"{where} has shape {a.shape} but the model expects {expected}; reshape the data")
    return a


def _read_image_folder(path: Path, specs: list[TensorSpec],
                       pre: Preprocess) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    if len(specs) != 1 or len(specs[0].shape) != 4:
        raise DataError(f"{path}: an image folder fits only a model with one image input (N,H,W,C); "
                        "give a .npz with one array per input")
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no images found ({', '.join(sorted(IMAGE_SUFFIXES))}); add some")
    _, h, w, c = specs[0].shape
    size = pre.resize or (h, w)
    if size[0] is None or size[1] is None:
        raise DataError(f"{path}: the model's input size is dynamic; give `resize=HxW`")
    # Subfolders name classes (ImageFolder convention): labels are their sorted order.
    classes = sorted({p.parent.relative_to(path).parts[0] for p in files if p.parent != path})
    labels = [] if classes and all(p.parent != path for p in files) else None
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((size[1], size[0]), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: not a readable image ({exc}); remove it or fix it") from exc
        arr = arr.reshape(size[0], size[1], c if c else 1)
        if pre.scale_255:
            arr = arr / 255.0
        arr = (arr - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        out.append(arr)
        if labels is not None:
            labels.append(classes.index(f.relative_to(path).parts[0]))
    return {"x": np.stack(out).astype(np.float32)}, (np.asarray(labels, np.int64) if labels is not None else None)
