"""The MobileNetV3-style ONNX sample (the model family whose INT8 onnx2tf users report collapsing):
edgeq's default full INT8 of it runs on builtin integer ops and stays near onnxruntime float.

Its side by side with onnx2tf's own ``-oiqt`` output lives in bench_onnx (benchmarks/onnx_classifiers.py):
onnx2tf runs are too slow for the test suite.
"""
from __future__ import annotations

import json
import os

from conftest import SAMPLES, sha256

MNV3 = SAMPLES / "fashion_mnv3"
TORCH = SAMPLES / "fashion_torch"


def test_mnv3_shares_fashion_torch_data_through_relative_symlinks():
    meta = json.loads((MNV3 / "meta.json").read_text())
    for name in ("calib.npz", "eval.npz"):
        link = MNV3 / name
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # no second 1.3 MB copy in git
        assert link.resolve() == (TORCH / name).resolve()
        assert (MNV3 / meta["data"][name.split(".")[0]]).resolve() == (TORCH / name).resolve()


def test_mnv3_int8_is_integer_builtin_and_close_to_onnxruntime(cli, tmp_path):
    out = tmp_path / "mnv3_int8.tflite"
    before = sha256(MNV3 / "model.onnx")
    res = cli("convert", MNV3 / "model.onnx", "--mode", "int8", "--calib", MNV3 / "calib.npz",
              "--eval", MNV3 / "eval.npz", "--out", out, "--json", "--no-progress")
    assert res.code == 0, res.err
    rep = json.loads(res.out)
    assert out.exists() and sha256(MNV3 / "model.onnx") == before
    assert rep["source_kind"] == "onnx" and rep["fully_integer"] is True and rep["float_ops"] == []
    ops = {o.upper() for o in rep["op_counts"]}
    assert not [o for o in ops if "FLEX" in o or o.startswith("CUSTOM")]
    # The MobileNetV3 parts stay single builtin int8 kernels, not float islands or decompositions.
    assert {"HARD_SWISH", "DEPTHWISE_CONV_2D", "MUL", "ADD", "MEAN"} <= ops
    assert rep["fidelity"]["max_rel_error"] < 1e-3  # the float graph onnx2tf made matches onnxruntime
    acc = rep["accuracy"]
    assert acc["float_top1"] > 0.85  # onnxruntime on the original model, 2,000 real test images
    assert acc["drop_points"] <= 1.0 and acc["vs_float"]["agreement"] >= 0.97
    assert rep["size_bytes"] < 0.5 * rep["float_size_bytes"]
