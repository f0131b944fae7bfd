"""Loading calibration/evaluation data: formats, layouts, labels, checks."""
from __future__ import annotations

import numpy as np
import pytest

from edgeq.data import load_dataset
from edgeq.errors import DataError
from edgeq.modes import Layout, Preprocess
from edgeq.sources.base import TensorSpec

IMG = [TensorSpec("image", (None, 8, 8, 3), "float32")]


def test_npy_npz_and_missing_channel_axis(tmp_path):
    x = np.random.default_rng(0).random((5, 8, 8, 3), dtype=np.float32)
    np.save(tmp_path / "a.npy", x)
    assert load_dataset(tmp_path / "a.npy", IMG).inputs["image"].shape == (5, 8, 8, 3)
    np.savez(tmp_path / "b.npz", image=x, y=np.arange(5))
    ds = load_dataset(tmp_path / "b.npz", IMG, limit=3)
    assert len(ds) == 3 and list(ds.labels) == [0, 1, 2]
    gray = [TensorSpec("g", (None, 8, 8, 1), "float32")]
    np.save(tmp_path / "g.npy", x[..., 0])
    assert load_dataset(tmp_path / "g.npy", gray).inputs["g"].shape == (5, 8, 8, 1)


def test_nchw_is_detected_and_noted(tmp_path):
    x = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    np.save(tmp_path / "c.npy", x)
    ds = load_dataset(tmp_path / "c.npy", IMG)
    np.testing.assert_array_equal(ds.inputs["image"], x.transpose(0, 2, 3, 1))
    assert any("NCHW" in n for n in ds.notes)
    with pytest.raises(DataError, match="read as NCHW"):
        load_dataset(tmp_path / "c.npy", [TensorSpec("image", (None, 8, 8, 4), "float32")], layout=Layout.NCHW)


def test_one_hot_labels_and_integer_inputs(tmp_path):
    ids = [TensorSpec("ids", (None, 6), "int32"), TensorSpec("mask", (None, 6), "int32")]
    np.savez(tmp_path / "t.npz", ids=np.ones((3, 6), np.int64), mask=np.ones((3, 6), np.int64),
             y=np.eye(4)[[1, 2, 3]].astype(np.int64))
    ds = load_dataset(tmp_path / "t.npz", ids)
    assert ds.inputs["ids"].dtype == np.int32 and list(ds.labels) == [1, 2, 3]
    np.savez(tmp_path / "f.npz", ids=np.ones((3, 6), np.float32), mask=np.ones((3, 6), np.int64))
    with pytest.raises(DataError, match="give integers"):
        load_dataset(tmp_path / "f.npz", ids)


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (16, 12), (200, 100, 50)).save(tmp_path / cls / f"{i}.jpg")
    ds = load_dataset(tmp_path, IMG, preprocess=Preprocess(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    assert ds.inputs["image"].shape == (4, 8, 8, 3) and list(ds.labels) == [0, 0, 1, 1]
    # JPEG is lossy: red ~200/255 -> (0.784 - 0.5) / 0.5 ~ 0.57
    assert ds.inputs["image"][0, 0, 0, 0] == pytest.approx(0.57, abs=0.03)


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="x.png: not a readable image"):
        load_dataset(tmp_path, IMG)
