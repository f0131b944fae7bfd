"""edgeq inspect and edgeq eval on real converted models."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgeq import ConvertOptions, Mode, convert


@pytest.fixture(scope="module")
def int8_model(cnn, tmp_path_factory):
    out = tmp_path_factory.mktemp("ie") / "cnn_int8.tflite"
    report = convert(cnn.keras, ConvertOptions(mode=Mode.INT8, calib=cnn.calib), out=out, eval_data=cnn.eval)
    return out, report


def test_inspect_json(cli, int8_model):
    path, _ = int8_model
    res = cli("inspect", path, "--json")
    assert res.code == 0, res.err
    info = json.loads(res.out)
    (inp,) = info["inputs"]
    assert inp["dtype"] == "int8" and inp["shape"] == [1, 28, 28, 1]
    assert inp["scale"] == pytest.approx(1 / 255, rel=1e-3) and inp["zero_point"] == -128
    assert info["fully_integer"] and info["all_weights_per_channel"]
    assert info["op_counts"]["CONV_2D"] == 2 and info["op_count"] == sum(info["op_counts"].values())
    assert sum(info["size_by_group"].values()) == info["size_bytes"] == path.stat().st_size
    assert all(w["channels"] == w["shape"][0] for w in info["weights"])


def test_inspect_text(cli, int8_model):
    res = cli("inspect", int8_model[0])
    assert res.code == 0
    assert "per-channel (32 channels)" in res.out and "integer-only  yes" in res.out


def test_eval_matches_the_conversion_report(cli, cnn, int8_model):
    path, report = int8_model
    res = cli("eval", path, "--data", cnn.eval, "--reference", cnn.keras, "--json")
    assert res.code == 0, res.err
    r = json.loads(res.out)
    assert r["top1"] == pytest.approx(report.accuracy.top1)
    assert r["float_top1"] == pytest.approx(report.accuracy.float_top1)
    assert r["drop_points"] == pytest.approx(report.accuracy.drop_points)


def test_eval_quantizes_inputs_with_the_models_own_parameters(cnn, int8_model):
    """Feeding float data through edgeq equals quantizing by hand and feeding int8 to LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.runtime import TFLiteRunner

    path, _ = int8_model
    x = np.load(cnn.eval)["x"][:5]
    ours = TFLiteRunner(path=path).run({"image": x})[0]
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    s, z = d["quantization"]
    for i in range(5):
        it.set_tensor(d["index"], np.clip(np.round(x[i:i + 1] / s) + z, -128, 127).astype(np.int8))
        it.invoke()
        so, zo = o["quantization"]
        np.testing.assert_allclose(ours[i], (it.get_tensor(o["index"])[0].astype(np.float32) - zo) * so)


def test_eval_limit_and_no_reference(cli, cnn, int8_model):
    res = cli("eval", int8_model[0], "--data", cnn.eval, "--limit", 100)
    assert res.code == 0 and "100 samples" in res.out
