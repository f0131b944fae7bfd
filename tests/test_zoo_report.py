"""The zoo report: the interval on a gap between two models (spread.py), the per-sample hits it reads, and the
merged tables it renders."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.zoo import data, manifest, metrics, report, spread
from benchmarks.zoo.manifest import Metric


def test_identical_models_have_a_zero_gap_and_a_zero_width_interval():
    a = np.r_[np.ones(150), np.zeros(50)]
    iv = spread.gap_interval(a, a, np.repeat(np.arange(10), 20))
    assert (iv.point, iv.low, iv.high) == (0.0, 0.0, 0.0)


def test_crops_that_fail_together_widen_the_interval():
    # b misses 40 of 200 samples: spread over 40 groups of 5 vs packed into 2 of 10 groups of 20
    a = np.ones(200)
    spread_out = np.ones(200)
    spread_out[::5] = 0
    packed = np.ones(200)
    packed[:40] = 0
    iid = spread.gap_interval(a, spread_out)
    clustered = spread.gap_interval(a, packed, np.repeat(np.arange(10), 20))
    assert iid.point == clustered.point == pytest.approx(20.0)
    assert iid.low <= 20.0 <= iid.high and clustered.low <= 20.0 <= clustered.high
    assert (clustered.high - clustered.low) > 2 * (iid.high - iid.low)
    assert clustered.low < 10.0 < iid.low  # "10 points apart" is ruled out only when the samples are independent


def test_pairing_keeps_shared_misses_out_of_the_interval():
    # both miss the same 60 samples; b misses 2 more: the gap is 1 point however noisy each rate is
    a = np.r_[np.zeros(60), np.ones(140)]
    b = a.copy()
    b[[100, 150]] = 0
    iv = spread.gap_interval(a, b)
    assert iv.point == pytest.approx(1.0)
    assert 0.0 <= iv.low and iv.high <= 2.5


def test_hits_are_plus_minus_per_sample_for_classifiers_only():
    ref = [np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6]])]
    got = [np.array([[0.2, 0.8], [0.3, 0.7], [0.1, 0.9]])]
    assert metrics.hits(Metric.CLASSIFIER, ref, got) == "+-+"
    assert metrics.hits(Metric.ENCODER, ref, got) is None
    assert spread.parse_hits("+-+").tolist() == [True, False, True]
    with pytest.raises(ValueError, match="'1'"):
        spread.parse_hits("+1")


def test_photo_models_group_their_eval_crops_by_photo():
    z = manifest.load().model("efficientnet_lite0")
    g = spread.eval_groups(z)
    assert len(g) == len(data.EVAL_PHOTOS) * data.CROPS_EVAL
    assert np.all(np.bincount(g) == data.CROPS_EVAL) and np.all(np.diff(g) >= 0)  # photo_crops' order
    assert spread.eval_groups(manifest.load().model("fer_emotion")) is None


def _row(model, mode, hits):
    h = "".join(hits)
    return {"model": model, "mode": mode, "family": "classifier", "status": "ok", "hits": h,
            "metrics": {"top1_agreement": h.count("+") / len(h)}}


def test_the_report_brackets_each_gap_with_its_interval_and_falls_back_without_hits():
    fp16, int8 = "+" * 200, "+" * 180 + "-" * 20
    rows = [_row("efficientnet_lite0", "fp16", fp16), _row("efficientnet_lite0", "int8", int8),
            _row("efficientnet_lite0", "int8_per_tensor", int8)]
    del rows[2]["hits"]
    line = next(ln for ln in report._classifiers(rows) if ln.startswith("| efficientnet_lite0"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3].startswith("10.0 [") and cells[6] == "10.0" and cells[7] == "-"
    low, high = map(float, cells[3][6:-1].split(", "))
    assert low < 10.0 < high  # the 20 misses sit in one photo's crops: 0 to 20 points, not 10 +- 4
    assert cells[4] == "open"  # 3 points lies inside that interval


def test_a_target_is_met_or_missed_only_when_the_whole_interval_says_so():
    assert spread.verdict(spread.Interval(2.0, 0.5, 3.0), 3.0) == "met"
    assert spread.verdict(spread.Interval(4.0, 1.5, 7.0), 3.0) == "open"
    assert spread.verdict(spread.Interval(10.5, 5.0, 16.5), 3.0) == "not met"


def test_a_merged_table_lists_the_models_of_the_rows_it_kept(tmp_path):
    # `run --models A --merge-from old.json`: rows of other models come along and the report must know them
    import argparse

    from benchmarks.zoo import run

    m = manifest.load()
    a = argparse.Namespace(jobs=1, runs=0, fast=False, models=["fer_emotion"], modes=["fp16"])
    rows = [dict(_row("fer_emotion", "fp16", "+" * 50), primary="top1_agreement"),
            dict(_row("efficientnet_lite0", "fp16", "+" * 200), primary="top1_agreement")]
    run.write(tmp_path / "zoo", run.environment(), 0.0, a, m, [m.model("fer_emotion")], rows, 2)
    doc = __import__("json").loads((tmp_path / "zoo.json").read_text())
    assert [z["name"] for z in doc["models"]] == [z.name for z in m.models if z.name in
                                                  ("fer_emotion", "efficientnet_lite0")]
    assert "efficientnet_lite0" in (tmp_path / "zoo.md").read_text()
