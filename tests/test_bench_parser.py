"""The benchmark_model output parser, on fixture texts written from the documented format (pure, fast)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeq.bench.errors import BenchmarkFailed
from edgeq.bench.parser import parse_benchmark_output, strip_prefix
from edgeq.bench.result import BenchResult
from edgeq.errors import EdgeqError

FIX = Path(__file__).parent / "fixtures" / "benchmark_model"


def parse(name: str, **kw) -> BenchResult:
    return parse_benchmark_output((FIX / name).read_text(), **kw)


def test_current_format_with_info_prefix_percentiles_memory_and_op_profile():
    r = parse("info_prefix_full.txt")
    assert r.tool == "benchmark_model" and r.ok
    assert r.model == "/home/pi/models/mobilenet_v2_int8.tflite"
    assert r.threads == 4 and r.delegate == "xnnpack"
    assert r.init_ms == pytest.approx(25.345)
    assert r.first_inference_ms == pytest.approx(20.522)
    assert r.warmup.count == 28 and r.warmup.mean_ms == pytest.approx(17.7263)
    inf = r.inference
    assert inf.count == 58
    assert (inf.mean_ms, inf.std_ms, inf.min_ms, inf.max_ms) == pytest.approx((17.2184, 0.421, 16.825, 19.075))
    assert (inf.p5_ms, inf.p50_ms, inf.p95_ms) == pytest.approx((16.880, 17.087, 18.267))
    assert inf.p90_ms is None and inf.p99_ms is None  # not printed by the tool: unknown, not zero
    # the periodic-monitoring peak wins over the footprint delta
    assert r.peak_memory_mb == pytest.approx(46.8789)
    assert r.device["memory_overall_mb"] == "41.1055" and r.device["end_VmRSS_mb"] == "43"
    assert r.device["model_size_mb"] == "3.57786"
    [cov] = r.delegation
    assert (cov.delegate, cov.nodes_delegated, cov.nodes_total, cov.partitions) == \
        ("TfLiteXNNPackDelegate", 65, 66, 2)
    assert not cov.fully_delegated and r.partially_delegated == [cov]
    # only the Run Order table of the regular runs: not initialization, not the duplicate "Top by" table
    assert [(o.node_type, o.avg_ms, o.percent, o.times_called) for o in r.op_profile] == [
        ("TfLiteXNNPackDelegate", 16.868, 99.874, 1), ("SOFTMAX", 0.021, 0.126, 1)]
    assert r.op_profile[1].name == "[MobilenetV2/Predictions/Softmax]:66"


def test_android_logcat_prefix_gpu_partial_delegation_and_all_same_warmup():
    r = parse("android_logcat_gpu_partial.txt", target="android-gpu")
    assert r.target == "android-gpu" and r.delegate == "gpu" and r.threads == 4
    assert r.model == "/data/local/tmp/detector_fp16.tflite"
    [cov] = r.delegation
    assert cov.describe() == "TfLiteGpuDelegateV2: 63 of 66 nodes delegated (2 partitions)"
    assert r.warmup.count == 1 and r.warmup.min_ms == r.warmup.max_ms == pytest.approx(9.12)
    assert r.warmup.std_ms == 0.0
    assert r.inference.count == 137 and r.inference.p50_ms == pytest.approx(7.25)
    assert r.init_ms == pytest.approx(481.6)
    # no periodic peak line: falls back to the footprint delta and says so
    assert r.peak_memory_mb == pytest.approx(95.75)
    assert "footprint delta" in r.device["peak_memory_source"]


def test_old_format_without_prefix_old_summary_and_start_column():
    r = parse("old_noprefix_2021.txt")
    assert r.model == "mobilenet_v1_1.0_224.tflite" and r.threads == 1 and r.delegate is None
    assert r.inference.count == 50 and r.inference.mean_ms == pytest.approx(124.310)
    assert r.inference.p50_ms is None  # old builds print no median
    assert r.init_ms == pytest.approx(3.123) and r.first_inference_ms == pytest.approx(130.012)
    assert r.peak_memory_mb == pytest.approx(39.6797)  # "Peak memory footprint (MB): ... overall="
    assert r.delegation == []
    assert [o.node_type for o in r.op_profile] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    assert r.op_profile[0].avg_ms == pytest.approx(9.790)  # [start] and [first] columns not mixed up


def test_oldest_format_no_stats_gives_average_only():
    r = parse("oldest_no_stats.txt")
    assert r.ok and r.inference.count == 0 and r.inference.mean_ms == pytest.approx(0.431)
    assert r.threads == 2 and r.init_ms == pytest.approx(0.812) and r.warmup is None


def test_external_delegate_fully_delegated_and_all_same_inference():
    r = parse("qnn_external_full.txt")
    assert r.delegate == "/data/local/tmp/libQnnTFLiteDelegate.so"
    [cov] = r.delegation
    assert cov.fully_delegated and cov.nodes_total == 120 and r.partially_delegated == []
    assert r.inference.count == 612 and r.inference.p50_ms == pytest.approx(1.601) and r.inference.std_ms == 0
    assert r.init_ms == pytest.approx(1204.8) and r.peak_memory_mb == pytest.approx(20.125)


@pytest.mark.parametrize("name, needles", [
    ("crashed_truncated.txt", ["broken.tflite", "Segmentation fault", "unsupported type"]),
    ("failed_to_prepare.txt", ["m_int16x8.tflite", "Node number 3 (DEPTHWISE_CONV_2D) failed to prepare",
                               "Benchmarking failed"]),
])
def test_runs_without_timings_raise_one_line_with_the_tail(name, needles):
    with pytest.raises(BenchmarkFailed) as info:
        parse(name)
    msg = str(info.value)
    assert isinstance(info.value, EdgeqError) and "\n" not in msg
    for n in needles:
        assert n in msg


def test_empty_output_fails_cleanly():
    with pytest.raises(BenchmarkFailed, match="no output"):
        parse_benchmark_output("")


def test_output_cut_after_warmup_is_a_failure_not_a_result():
    text = (FIX / "info_prefix_full.txt").read_text()
    cut = text[:text.index("INFO: Running benchmark for at least 50")]
    with pytest.raises(BenchmarkFailed):
        parse_benchmark_output(cut)


def test_the_three_prefixes_give_the_same_result_and_unknown_lines_are_skipped():
    info = (FIX / "info_prefix_full.txt").read_text().splitlines()
    bare = [ln[len("INFO: "):] if ln.startswith("INFO: ") else ln for ln in info]
    logcat = [f"11-29 05:31:57.123  4242  4242 I tflite  : {ln}" for ln in bare]
    noisy = []
    for ln in bare:
        noisy += [ln, "some vendor chatter: [x] = 3", "W/Adreno: count=abc", "count=garbage"]
    results = [parse_benchmark_output("\n".join(v)) for v in (info, bare, logcat, noisy)]
    dicts = [r.to_dict() for r in results]
    for d in dicts:
        d.pop("output_tail")
    assert dicts[0] == dicts[1] == dicts[2] == dicts[3]


def test_strip_prefix_variants():
    assert strip_prefix("INFO: Num threads: [4]") == "Num threads: [4]"
    assert strip_prefix("11-28 14:02:11.512  8123  8123 I tflite  : Num threads: [4]") == "Num threads: [4]"
    assert strip_prefix("I/tflite  ( 8123): Num threads: [4]") == "Num threads: [4]"
    assert strip_prefix("Num threads: [4]") == "Num threads: [4]"


def test_parsed_result_round_trips_through_json():
    r = parse("info_prefix_full.txt")
    again = BenchResult.from_dict(json.loads(json.dumps(r.to_dict())))
    assert again == r
