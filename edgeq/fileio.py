"""Atomic output: a reader sees either the old file or the complete new one, never half of it.

Output paths are probed for real before the expensive work (a temporary file is created in the target
folder and removed: ``os.access`` says yes to root everywhere), never name one of the command's inputs,
and every ``OSError`` while writing becomes one line naming the path and the cause.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from edgeq.errors import OutputError
from edgeq.termination import raise_if_terminated


def _tmp_prefix(path: Path) -> str:
    # Short enough that the temporary name fits where the final name fits.
    return f".{path.name[:40]}."


def check_writable(path: Path, inputs: Iterable[Path | str | None] = ()) -> None:
    """Fail early (before minutes of conversion) when ``path`` cannot be created, is not a regular
    file, or would overwrite one of ``inputs`` (a file, or anything inside a model folder such as a
    SavedModel; a data folder of images may hold the output)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        blocker = next((p for p in [parent, *parent.parents] if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            raise OutputError(f"{path}: {blocker} is a file, not a folder; choose another output path")
        raise OutputError(f"{path}: folder {parent} does not exist; create it or choose another output path")
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise OutputError(f"{path.parent / (path.name[:40] + '...')}: file name is {len(os.fsencode(path.name))} "
                          f"bytes, longer than the {name_max} this file system allows; choose a shorter name")
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"{path}: cannot use it as output ({_cause(exc)}); choose another output path") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise OutputError(f"{path}: is a directory; give a file name for the output")
    if mode is not None and not stat.S_ISREG(mode):
        raise OutputError(f"{path}: exists and is not a regular file (a device, FIFO or socket); "
                          "choose another output path")
    check_not_input(path, inputs)
    try:  # the real test: create (and remove) a file where the output will go
        fd, probe = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {parent} ({_cause(exc)}); choose another output path") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: exists and is not writable; choose another output path")


def check_not_input(path: Path, inputs: Iterable[Path | str | None]) -> None:
    """Refuse an output that is one of ``inputs``, or lies inside an input folder that is a model
    (a SavedModel: replacing any file in it damages the model)."""
    target = Path(path).resolve()
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):  # None, or in-memory data (arrays, tf.data ...)
            continue
        src = Path(item).resolve()
        same = target == src or (target.exists() and src.exists() and os.path.samefile(target, src))
        model_folder = src.is_dir() and (src / "saved_model.pb").exists()
        if same or (model_folder and src in target.parents):
            raise OutputError(f"{path}: would overwrite the input {item}; choose another output path")


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str = ".tmp", inputs: Iterable[Path | str | None] = ()):
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``, on any error
    (Ctrl-C and SIGTERM included) it is removed. For writers that need a file name (e.g. ``model.save``).
    An ``OSError`` (disk full, file system gone read-only ...) becomes an :class:`OutputError`."""
    path = Path(path)
    check_writable(path, inputs)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=suffix, dir=path.parent or ".")
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({_cause(exc)}); choose another output path") from None
    try:
        yield Path(tmp)
        raise_if_terminated()  # a SIGTERM whose raise a finalizer swallowed: still no output
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"{path}: writing failed ({_cause(exc)}); free space or choose another "
                              "output path") from exc
        raise


def atomic_write_bytes(path: Path, data: bytes, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    with atomic_output(path, inputs=inputs) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: Path, text: str, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), inputs)


def make_output_folder(folder: Path) -> Path:
    """``mkdir -p`` for a results folder, with a one-line error instead of an OSError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{folder}: exists and is not a folder; give a folder for the results") from None
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the folder ({_cause(exc)}); choose another") from None
    return folder
