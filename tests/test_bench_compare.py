"""The variants x targets comparison: joining, Pareto front, Markdown, JSON, plot (synthetic results, fast)."""
from __future__ import annotations

import json

import pytest

from edgeq.bench import compare as cmp
from edgeq.bench.result import BenchResult, DelegateCoverage, LatencyStats
from edgeq.errors import DataError


def _r(model, target, p50, threads=1, delegation=(), error=None, mean=None):
    inf = LatencyStats(count=0 if error else 10, mean_ms=None if error else (mean or p50),
                       p50_ms=None if error else p50)
    return BenchResult(model=model, target=target, threads=threads, inference=inf, delegation=list(delegation),
                       error=error)


@pytest.fixture
def models(tmp_path):
    sizes = {"m_fp32.tflite": 4000, "m_fp16.tflite": 2000, "m_int8.tflite": 1000, "m_bad.tflite": 900}
    out = []
    for name, n in sizes.items():
        (tmp_path / name).write_bytes(b"\0" * n)
        out.append(tmp_path / name)
    return out


def test_build_joins_by_file_name_keeps_fastest_threads_and_marks_the_front(models):
    results = [
        _r("/data/local/tmp/m_fp32.tflite", "android-cpu", 20.0),  # device paths differ: joined by name
        _r("m_fp32.tflite", "host", 5.0, threads=1), _r("m_fp32.tflite", "host", 3.0, threads=2),
        _r("m_fp16.tflite", "host", 3.5),
        _r("m_int8.tflite", "host", 2.0, delegation=[DelegateCoverage("X", 8, 9, 1)]),
        _r("/data/local/tmp/m_int8.tflite", "android-cpu", 6.0),
        _r("m_bad.tflite", "host", 0, error="m_bad.tflite: boom"),
    ]
    acc = {"m_fp32.tflite": cmp.Accuracy(91.0, "top1", "r"), "m_fp16.tflite": cmp.Accuracy(90.9, "top1", "r"),
           "m_int8.tflite": cmp.Accuracy(90.5, "top1", "r")}
    c = cmp.build(models, results, acc, {"m_int8.tflite": "int8"})
    assert c.targets == ["android-cpu", "host"]
    v = {x.name: x for x in c.variants}
    assert v["m_fp32"].latency["host"].threads == 2  # fastest of 1 and 2 threads
    assert v["m_fp32"].size_bytes == 4000 and v["m_int8"].mode == "int8"
    # fp16 is slower than fp32@2 threads and less accurate: dominated
    assert cmp.pareto_front(c, "host") == ["m_fp32", "m_int8"]
    assert cmp.pareto_front(c, "android-cpu") == ["m_fp32", "m_int8"]
    md = cmp.render_markdown(c)
    assert "| m_int8 | int8 | 1.0 | 90.50 | 6.000 * | 2.000 (8/9 delegated) * |" in md
    assert "| m_fp16 | - | 2.0 | 90.90 | - | 3.500 |" in md
    assert "| m_bad | - | 0.9 | - | - | failed |" in md
    d = json.loads(json.dumps(c.to_dict()))
    assert d["pareto"]["host"] == ["m_fp32", "m_int8"]
    assert d["variants"][3]["latency"]["host"]["error"] == "m_bad.tflite: boom"


def test_mean_is_used_when_the_tool_gave_no_median():
    r = _r("a.tflite", "rpi4", None, mean=12.5)
    assert cmp.latency_ms(r) == 12.5


def test_plot_is_a_png_and_none_without_accuracy(models, tmp_path):
    results = [_r(m.name, "host", 1.0 + i) for i, m in enumerate(models[:3])]
    acc = {m.name: cmp.Accuracy(90.0 - i, "top1", "r") for i, m in enumerate(models[:3])}
    path = cmp.plot_pareto(cmp.build(models[:3], results, acc), tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "p.tmp.png").exists()
    assert cmp.plot_pareto(cmp.build(models[:3], results, {}), tmp_path / "q.png") is None


def test_reports_give_top1_or_agreement_and_bad_reports_are_one_line(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"output": "/x/m_int8.tflite", "mode": "int8", "accuracy": {"top1": 0.905}}))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"output": "m_fp16.tflite", "mode": "fp16",
                             "accuracy": {"top1": None, "vs_float": {"agreement": 0.99}}}))
    acc, modes = cmp.read_reports([a, b])
    assert acc["m_int8.tflite"].value == pytest.approx(90.5) and acc["m_int8.tflite"].metric == "top1"
    assert acc["m_fp16.tflite"].metric == "agreement" and modes["m_fp16.tflite"] == "fp16"
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(DataError, match="bad.json: not an 'edgeq convert --json' report"):
        cmp.read_reports([bad])
