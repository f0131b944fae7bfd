"""--mode mixed: the budgeted search, its report, FP16/FP32 fallback, MACs accounting.

Runs on the committed hard sample fashion_dwnet (depthwise channel scales spread over two decades, so
plain full-INT8 loses points) with one calibration shared by the whole module.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import one_line_error

DWNET = Path(__file__).resolve().parents[1] / "sample_models" / "fashion_dwnet"
BUDGET = 2.0  # top-1 points


@pytest.fixture(scope="module")
def dw_eval(tmp_path_factory) -> Path:
    """1,000 of the sample's held-out images: enough for a stable top-1, half the evaluation time."""
    with np.load(DWNET / "eval.npz") as z:
        path = tmp_path_factory.mktemp("dw") / "eval1k.npz"
        np.savez(path, x=z["x"][:1000], y=z["y"][:1000])
    return path


@pytest.fixture(scope="module")
def mixed_report(dw_eval, tmp_path_factory):
    from edgeq import ConvertOptions, Mode, convert

    out = tmp_path_factory.mktemp("mixed") / "dw_mixed.tflite"
    from edgeq.modes import PtqChoice

    # --ptq plain: the converter's own calibration, which this sample breaks (graph preparation fixes it).
    options = ConvertOptions(mode=Mode.MIXED, calib=DWNET / "calib.npz", calib_samples=100, max_drop=BUDGET,
                             ptq=PtqChoice.PLAIN)
    return convert(DWNET / "model.keras", options, out=out, eval_data=dw_eval)


@pytest.fixture(scope="module")
def calibrated(dw_eval):
    """The library pieces without the CLI: one calibration and a scorer on the eval subset."""
    from edgeq.convert import representative_data
    from edgeq.data import load_dataset
    from edgeq.modes import IOType
    from edgeq.progress import Silent
    from edgeq.quantize.selective import Calibrated
    from edgeq.sources import load_float_model

    with load_float_model(DWNET / "model.keras") as fm:
        calib = load_dataset(DWNET / "calib.npz", fm.inputs, limit=100)
        ev = load_dataset(dw_eval, fm.inputs)
        cal = Calibrated.from_saved_model(fm.saved_model_dir, representative_data(calib, Silent()), True,
                                          IOType.FLOAT32, "dwnet")
        return cal, ev.inputs, fm.predict(ev.inputs), ev.labels


def test_mixed_meets_budget_that_full_int8_breaks(mixed_report):
    m = mixed_report.extra["mixed"]
    assert m["drop_int8"] > BUDGET, "the hard sample should break the budget in full INT8"
    assert m["met"] is True and m["drop"] <= BUDGET
    # The conversion's own evaluation of the written model agrees with the search's verification.
    assert mixed_report.accuracy.drop_points == pytest.approx(m["drop"], abs=1e-6)
    assert 0 < len(m["kept"]) < m["layers_total"]
    assert 0.5 < m["int8_macs_share"] < 1.0
    assert "met" in m["summary"] and "% of MACs" in m["summary"]


def test_kept_layers_are_found_by_measurement_and_run_fp16(mixed_report):
    from edgeq.quantize.macs import Precision, op_records

    m = mixed_report.extra["mixed"]
    kept = {d["node"]: d for d in m["kept"]}
    # The spread depthwise outputs are the measured culprits: the search must keep at least one of them.
    assert any(d["op"] == "DEPTHWISE_CONV_2D" for d in kept.values())
    assert all(d["precision"] == "fp16" for d in kept.values() if d["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D"))
    records = op_records(Path(mixed_report.output))
    for r in records:
        if r.name in kept:
            assert r.precision in (Precision.FP16, Precision.FP32)
        elif r.macs:
            assert r.precision is Precision.INT8, r


def test_mixed_report_text_and_json(mixed_report):
    text = mixed_report.render()
    assert "mixed" in text and "kept in higher precision" in text
    d = mixed_report.to_dict()
    assert d["mixed"]["search_s"] > 0 and d["mixed"]["fallback"] == "fp16"
    assert [s["error_share"] for s in d["mixed"]["sensitivity"]["layers"]] == sorted(
        (s["error_share"] for s in d["mixed"]["sensitivity"]["layers"]), reverse=True)


def test_budget_that_cannot_be_met_is_said_plainly(calibrated):
    from edgeq.modes import Metric
    from edgeq.quantize.mixed import search
    from edgeq.quantize.sensitivity import Scorer

    cal, inputs, ref, labels = calibrated
    plan = search(cal, Scorer(inputs, ref, labels, Metric.TOP1), max_drop=-50.0, rank_samples=300)
    assert plan.met is False and "CANNOT be met" in plan.summary()
    assert plan.loss < plan.loss_int8  # it still hands back the best model it found
    assert f"best found drop {plan.loss:+.2f}" in plan.summary()


def test_unmet_budget_with_nothing_better_than_full_int8_says_so():
    # bench_mixed's Lite0 from the prepared model: no int16 set beat full INT8, so the plan keeps none;
    # the summary must not claim harmful layers were kept out of INT8
    from edgeq.modes import Fallback, Metric
    from edgeq.quantize.macs import ComputeShare, Precision
    from edgeq.quantize.mixed import LayerDecision, MixedPlan

    share = ComputeShare(ops=60, macs=1000, ops_by_precision={"int8": 60}, macs_by_precision={"int8": 1000})
    plan = MixedPlan(metric=Metric.AGREEMENT, max_drop=0.5, met=False, loss_int8=4.0, loss=4.0,
                     fallback=Fallback.INT16, kept=[], layers_total=60, share=share, size_bytes=4096,
                     search_s=1.0, quantizations=9, evaluations=9)
    text = plan.summary()
    assert "CANNOT be met: no layer set tried did better than full INT8" in text
    assert "best found" not in text and "kept in higher precision: 0 of 60 layers: none;" in text
    plan.kept = [LayerDecision("b0", "n0", "CONV_2D", 10, Precision.INT16, 0.5)]
    plan.loss = 3.0
    assert "CANNOT be met: best found drop +3.00" in plan.summary()


def test_generous_budget_keeps_everything_int8(calibrated):
    from edgeq.modes import Metric
    from edgeq.quantize.mixed import search
    from edgeq.quantize.sensitivity import Scorer

    cal, inputs, ref, labels = calibrated
    plan = search(cal, Scorer(inputs, ref, labels, Metric.AGREEMENT), max_drop=100.0)
    assert plan.met and plan.kept == [] and plan.share.int8_macs_share == 1.0
    assert plan.quantizations == 1 and "full INT8 fits" in plan.summary()


def test_fp16_fallback_halves_weights_and_matches_fp32(calibrated):
    from edgeq.quantize.macs import Precision, op_records
    from edgeq.runtime import TFLiteRunner

    cal, inputs, _, _ = calibrated
    big = max(cal.layers(), key=lambda layer: layer.macs)
    fp32 = cal.quantize([big.node])
    fp16 = cal.quantize([big.node], fp16_weights=True)
    prec = {r.name: r.precision for r in op_records(content=fp16)}
    assert prec[big.node] is Precision.FP16
    assert {r.name: r.precision for r in op_records(content=fp32)}[big.node] is Precision.FP32
    assert len(fp16) < len(fp32) - 1000  # the float32 filter became float16
    x = {k: v[:200] for k, v in inputs.items()}
    a, b = TFLiteRunner(content=fp32).run(x)[0], TFLiteRunner(content=fp16).run(x)[0]
    assert np.mean(a.argmax(-1) == b.argmax(-1)) > 0.97


def test_int16_fallback_beats_plain_int8_and_stays_all_integer(calibrated):
    """--fallback int16 on the converter's plain calibration: the kept layers run 16x8 kernels, no float op."""
    from edgeq.modes import Fallback, Metric
    from edgeq.quantize.macs import Precision
    from edgeq.quantize.mixed import search
    from edgeq.quantize.sensitivity import Scorer
    from edgeq.runtime import TFLiteRunner

    cal, inputs, ref, labels = calibrated
    plan = search(cal, Scorer(inputs, ref, labels, Metric.TOP1), max_drop=BUDGET, fallback=Fallback.INT16,
                  rank_samples=300)
    assert plan.met and plan.loss <= BUDGET < plan.loss_int8
    assert plan.all_integer is True and plan.to_dict()["all_integer"] is True and "all-integer" in plan.summary()
    assert plan.kept and all(d.precision is Precision.INT16 for d in plan.kept)
    assert 0.4 < plan.share.int8_macs_share < 1.0 and plan.share.macs_by_precision["int16"] > 0
    out = TFLiteRunner(content=plan.content).run({k: v[:50] for k, v in inputs.items()})[0]
    assert out.shape == (50, 10) and np.isfinite(out).all()


def test_op_macs():
    from edgeq.quantize.macs import op_macs

    assert op_macs("CONV_2D", [[1, 8, 8, 3], [16, 3, 3, 3], [16]], [1, 8, 8, 16]) == 8 * 8 * 16 * 27
    assert op_macs("DEPTHWISE_CONV_2D", [[1, 8, 8, 16], [1, 3, 3, 16]], [1, 4, 4, 16]) == 4 * 4 * 16 * 9
    assert op_macs("FULLY_CONNECTED", [[1, 64], [10, 64]], [1, 10]) == 640
    assert op_macs("ADD", [[1, 4], [1, 4]], [1, 4]) == 0


def test_metric_losses_in_points():
    from edgeq.modes import Metric
    from edgeq.quantize.sensitivity import metric_loss

    ref = [np.eye(4, dtype=np.float32)]
    out = [np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]]
    labels = np.arange(4)
    assert metric_loss(Metric.TOP1, ref, out, labels) == pytest.approx(25.0)
    assert metric_loss(Metric.AGREEMENT, ref, out, labels) == pytest.approx(25.0)
    assert metric_loss(Metric.COSINE, ref, ref, labels) == pytest.approx(0.0)
    assert metric_loss(Metric.SQNR, ref, [ref[0] * 1.1], labels) == pytest.approx(1.0, rel=1e-6)


def test_mixed_needs_eval_data(cli, tmp_path):
    res = cli("convert", DWNET / "model.keras", "--mode", "mixed", "--calib", DWNET / "calib.npz",
              "--out", tmp_path / "m.tflite")
    one_line_error(res, "--mode mixed needs --eval")
    assert not (tmp_path / "m.tflite").exists()


def test_top1_metric_needs_labels():
    from edgeq.errors import DataError
    from edgeq.modes import Metric
    from edgeq.quantize.sensitivity import Scorer

    x = {"image": np.zeros((4, 28, 28, 1), np.float32)}
    with pytest.raises(DataError, match="top1 needs labels"):
        Scorer(x, [np.zeros((4, 10), np.float32)], None, Metric.TOP1)
    assert Scorer(x, [np.zeros((4, 10), np.float32)], None).metric is Metric.AGREEMENT  # the label-free default


def test_prepared_int8_within_budget_keeps_everything_int8(calibrated):
    """--ptq auto: when edgeq's prepared full INT8 already fits, the plan keeps no layer out of INT8."""
    from edgeq.modes import ConvertOptions, Metric, Mode
    from edgeq.quantize.mixed import _int8_plan
    from edgeq.quantize.sensitivity import Scorer

    cal, inputs, ref, labels = calibrated
    plan = _int8_plan(Scorer(inputs, ref, labels, Metric.TOP1), ConvertOptions(mode=Mode.MIXED, max_drop=1.0),
                      (0.3, cal.quantize(), "equalize kept"))
    assert plan.met and plan.kept == [] and plan.share.int8_macs_share == 1.0
    assert plan.layers_total == len(cal.layers())
    assert "graph preparation fits" in plan.summary() and "equalize kept" in plan.summary()


def test_cli_flags_reach_the_plan(cli, tmp_path):
    import json

    with np.load(DWNET / "eval.npz") as z:
        np.savez(tmp_path / "ev.npz", x=z["x"][:100])  # no labels: agreement is the budget's metric
    res = cli("convert", DWNET / "model.keras", "--mode", "mixed", "--ptq", "plain", "--max-drop", "100",
              "--metric", "agreement", "--fallback", "fp32", "--calib", DWNET / "calib.npz", "--calib-samples", 20,
              "--eval", tmp_path / "ev.npz", "--out", tmp_path / "m.tflite", "--json", "--no-progress")
    assert res.code == 0, res.err
    m = json.loads(res.out)["mixed"]
    assert (m["metric"], m["max_drop"], m["fallback"], m["met"], m["kept"]) == ("agreement", 100.0, "fp32", True, [])
    assert (tmp_path / "m.tflite").exists()


def test_cli_int16_fallback_is_all_integer_with_int8_io(cli, tmp_path):
    import json

    with np.load(DWNET / "eval.npz") as z:
        np.savez(tmp_path / "ev.npz", x=z["x"][:100])
    res = cli("convert", DWNET / "model.keras", "--mode", "mixed", "--ptq", "plain", "--max-drop", "100",
              "--fallback", "int16", "--calib", DWNET / "calib.npz", "--calib-samples", 20,
              "--eval", tmp_path / "ev.npz", "--out", tmp_path / "m.tflite", "--json", "--no-progress")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    m = report["mixed"]
    assert (m["fallback"], m["met"], m["all_integer"]) == ("int16", True, True)
    assert report["io"] == "int8" and report["fully_integer"] is True


def test_search_starts_from_the_prepared_int8(calibrated, dw_eval):
    """--ptq auto over budget: the search's full-INT8 candidate is edgeq's prepared model (far less noise than
    the converter's plain calibration on this sample), and the int16 layers it keeps go on top of it."""
    from edgeq.data import load_dataset
    from edgeq.modes import ConvertOptions, Fallback, Metric, Mode, PtqChoice
    from edgeq.quantize.mixed import quantize_mixed
    from edgeq.quantize.sensitivity import Scorer
    from edgeq.sources import load_float_model

    cal, inputs, ref, labels = calibrated
    plain = Scorer(inputs, ref, labels, Metric.SQNR)
    plain_loss = plain.loss(plain.outputs(cal.quantize()))
    options = ConvertOptions(mode=Mode.MIXED, calib=DWNET / "calib.npz", calib_samples=40, max_drop=0.01,
                             metric=Metric.SQNR, fallback=Fallback.INT16, ptq=PtqChoice.AUTO)
    with load_float_model(DWNET / "model.keras") as fm:
        calib = load_dataset(DWNET / "calib.npz", fm.inputs, limit=40)
        content, m = quantize_mixed(fm, options, calib, load_dataset(dw_eval, fm.inputs))
    assert any("searched from it" in n for n in m["notes"]), m["notes"]
    assert m["drop_int8"] < plain_loss / 2, (m["drop_int8"], plain_loss)
    assert m["kept"] and m["drop"] < m["drop_int8"]
    assert m["all_integer"] is True and m["int8_macs_share"] < 1.0
