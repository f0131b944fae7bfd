"""edgeq bench / compare / convert --target on real converted models in the real LiteRT interpreter.

Two conversions of the small sample CNN (module-scoped, through the CLI so that `convert --target` picking
the mode is itself tested), then few timed runs per benchmark: timing values are never asserted, only
their consistency (machine load must not decide a test).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeq.bench.host import HostBenchOptions, bench_host
from edgeq.bench.result import BenchResult
from edgeq.modelinfo import inspect_tflite

from conftest import one_line_error


@pytest.fixture(scope="module")
def variants(tmp_path_factory, cnn):
    """fp32 (picked by --target host) and int8 (picked by --target coral-edgetpu) with their JSON reports."""
    import contextlib
    import io

    from edgeq.cli.main import main

    d = tmp_path_factory.mktemp("bench")
    out = {}
    for name, target in (("fp32", "host"), ("int8", "coral-edgetpu")):
        model = d / f"cnn_{name}.tflite"
        buf, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            code = main(["convert", str(cnn.keras), "--target", target, "--calib", str(cnn.calib),
                         "--calib-samples", "32", "--eval", str(cnn.eval), "--out", str(model), "--json",
                         "--no-progress"])
        assert code == 0, err.getvalue()
        report = json.loads(buf.getvalue())
        (d / f"cnn_{name}.json").write_text(buf.getvalue())
        out[name] = (model, d / f"cnn_{name}.json", report, err.getvalue())
    return out


def test_convert_target_picks_the_targets_precision_and_warns_only_when_needed(variants):
    _, _, fp32_report, fp32_err = variants["fp32"]
    _, _, int8_report, int8_err = variants["int8"]
    assert fp32_report["mode"] == "fp32"  # host.toml: precision = "fp32"
    assert int8_report["mode"] == "int8" and int8_report["fully_integer"]  # coral: int8
    assert "warning" not in fp32_err  # the host's XNNPACK has no op allowlist
    # a full-int8 model has no float-compute warning on the Edge TPU; any line left names an op outside its list
    from edgeq.targets import load_target

    allowed = load_target("coral-edgetpu").op_limits.supported_ops
    for line in int8_err.splitlines():
        assert "float ops" not in line and line.split(": ")[2].split(" x")[0] not in allowed, line


def test_convert_target_warns_one_line_per_problem_for_a_float_model_on_the_edge_tpu(variants):
    from edgeq.targets import load_target, target_warnings

    lines = target_warnings(load_target("coral-edgetpu"), inspect_tflite(variants["fp32"][0]))
    assert lines and all("\n" not in ln and ln.startswith("edgeq: warning: target coral-edgetpu") for ln in lines)
    assert any("CONV_2D" in ln and "--mode int8" in ln for ln in lines)


def test_host_results_are_consistent_and_coverage_matches_the_model(variants):
    fp32, int8 = variants["fp32"][0], variants["int8"][0]
    results = bench_host([fp32, int8], HostBenchOptions(threads=(1,), runs=6, warmup=2))
    assert [Path(r.model).name for r in results] == [fp32.name, int8.name]
    for r, model in zip(results, (fp32, int8)):
        assert r.ok and r.error is None and r.tool == "litert-python" and r.threads == 1
        i = r.inference
        assert i.count == 6 and r.warmup.count == 2
        assert 0 < i.min_ms <= i.p50_ms <= i.p90_ms <= i.p99_ms <= i.max_ms
        assert r.init_ms > 0 and r.first_inference_ms > 0
        assert r.peak_memory_mb > float(r.device["rss_before_model_mb"]) > 0
        [cov] = r.delegation
        assert cov.delegate == "TfLiteXNNPackDelegate"
        assert cov.nodes_total == sum(inspect_tflite(model).op_counts.values())
        assert 0 < cov.nodes_delegated <= cov.nodes_total
        assert BenchResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    # XNNPACK has no int8 SOFTMAX kernel: measured partial delegation, named
    int8_cov = results[1].delegation[0]
    assert not int8_cov.fully_delegated and "SOFTMAX" in int8_cov.not_delegated


def test_no_xnnpack_runs_builtin_kernels_without_delegate(variants):
    [r] = bench_host([variants["int8"][0]], HostBenchOptions(runs=3, warmup=1, xnnpack=False))
    assert r.ok and r.delegate == "none" and r.delegation == []


def test_inputs_npz_feeds_real_samples_to_a_quantized_model(variants, cnn):
    [r] = bench_host([variants["int8"][0]], HostBenchOptions(runs=3, warmup=1, inputs=cnn.eval))
    assert r.ok, r.error


def test_bad_models_fail_one_line_each_and_the_good_one_is_still_reported(variants, tmp_path, cli):
    good = variants["int8"][0]
    text = tmp_path / "notes.tflite"
    text.write_text("not a model")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(good.read_bytes()[:2000])  # TFL3 header, truncated body: LiteRT would crash on it
    rank3 = tmp_path / "rank3.tflite"
    _with_rank3_input(good, rank3)  # a valid file whose CONV_2D cannot be prepared: allocation fails
    res = cli("bench", text, good, cut, rank3, tmp_path / "missing.tflite", "--runs", "3", "--warmup", "1",
              "--threads", "1,2", "--no-progress")
    assert res.code == 2
    assert good.name in res.out and "PARTIAL" in res.out and "WARNING partial delegation" in res.out
    errs = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(errs) == 4 and all(ln.startswith("edgeq: error: ") for ln in errs), res.err
    assert "rank3.tflite: the interpreter cannot allocate it (Node number 0 (CONV_2D) failed to prepare" in res.err
    assert "notes.tflite: not a TFLite flatbuffer" in res.err
    assert "cut.tflite: corrupt TFLite model" in res.err  # caught by edgeq.tflite.verify, before LiteRT
    assert "missing.tflite: no such file" in res.err
    assert "Traceback" not in res.err


def _with_rank3_input(src: Path, dst: Path) -> None:
    """Copy of ``src`` whose 4-D image input is declared 3-D (drop the channel axis)."""
    import numpy as np
    from ai_edge_litert.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model(str(src))
    sg = m.subgraphs[0]
    t = sg.tensors[sg.inputs[0]]
    t.shape = np.array(list(t.shape)[:3], dtype=np.int32)
    if t.shapeSignature is not None:
        t.shapeSignature = np.array(list(t.shapeSignature)[:3], dtype=np.int32)
    flatbuffer_utils.write_model(m, str(dst))


def test_delegate_library_that_does_not_load_is_one_line(variants, tmp_path, cli):
    fake = tmp_path / "libfake_delegate.so"
    fake.write_bytes(b"\x7fELF not really")
    res = cli("bench", variants["int8"][0], "--delegate-lib", fake, "--runs", "2", "--warmup", "1",
              "--no-progress")
    one_line_error(res, "libfake_delegate.so does not load")


def test_json_and_out_folder(variants, tmp_path, cli):
    res = cli("bench", variants["fp32"][0], "--runs", "3", "--warmup", "1", "--json", "--out", tmp_path / "o",
              "--no-progress")
    assert res.code == 0, res.err
    printed = [BenchResult.from_dict(d) for d in json.loads(res.out)]
    written = [BenchResult.from_dict(d) for d in json.loads((tmp_path / "o" / "bench.json").read_text())]
    assert printed == written and printed[0].ok
    assert "| model |" in (tmp_path / "o" / "bench.md").read_text()


def test_unknown_and_device_targets_fail_before_running(variants, cli):
    one_line_error(cli("bench", variants["fp32"][0], "--target", "pixel99"), "unknown target 'pixel99'", "rpi5")


def test_compare_table_json_and_pareto_png(variants, tmp_path, cli):
    (m32, r32, rep32, _), (m8, r8, rep8, _) = variants["fp32"], variants["int8"]
    res = cli("compare", m32, m8, r32, r8, "--runs", "3", "--warmup", "1", "--out", tmp_path / "c",
              "--no-progress")
    assert res.code == 0, res.err
    data = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert data["targets"] == ["host"]
    by = {v["name"]: v for v in data["variants"]}
    assert by["cnn_int8"]["size_bytes"] < by["cnn_fp32"]["size_bytes"]
    assert by["cnn_int8"]["accuracy"]["value"] == pytest.approx(100 * rep8["accuracy"]["top1"])
    assert by["cnn_fp32"]["latency"]["host"]["p50_ms"] > 0
    # the front from the numbers themselves: a variant is on it unless another is as fast and as accurate,
    # and better in one
    pts = {n: (v["latency"]["host"]["p50_ms"], v["accuracy"]["value"]) for n, v in by.items()}
    dominated = {n for n, (lat, acc) in pts.items() for m, (l2, a2) in pts.items()
                 if m != n and l2 <= lat and a2 >= acc and (l2, a2) != (lat, acc)}
    assert sorted(data["pareto"]["host"]) == sorted(set(pts) - dominated)
    assert (tmp_path / "c" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| cnn_int8 | int8 |" in res.out


def test_compare_measures_accuracy_with_eval_and_takes_saved_device_results(variants, cnn, tmp_path, cli):
    (m32, _, rep32, _), (m8, _, rep8, _) = variants["fp32"], variants["int8"]
    from edgeq.bench.result import LatencyStats

    saved = [BenchResult(model=f"/data/local/tmp/{m.name}", target="android-cpu", threads=4, tool="benchmark_model",
                         inference=LatencyStats(count=50, mean_ms=ms, p50_ms=ms)).to_dict()
             for m, ms in ((m32, 9.0), (m8, 4.0))]
    results = tmp_path / "phone.json"
    results.write_text(json.dumps(saved))
    res = cli("compare", m32, m8, results, "--eval", cnn.eval, "--json", "--no-progress")
    assert res.code == 0, res.err
    data = json.loads(res.out)
    assert data["targets"] == ["android-cpu"]  # saved results only: nothing benchmarked on the host
    by = {v["name"]: v for v in data["variants"]}
    # measured here on the same eval data as the convert reports
    assert by["cnn_int8"]["accuracy"]["value"] == pytest.approx(100 * rep8["accuracy"]["top1"], abs=1e-6)
    assert by["cnn_fp32"]["accuracy"]["value"] == pytest.approx(100 * rep32["accuracy"]["top1"], abs=1e-6)
    assert by["cnn_int8"]["latency"]["android-cpu"]["p50_ms"] == 4.0


def test_token_id_inputs_get_valid_ids_when_no_inputs_are_given(tmp_path):
    """An encoder's int ids feed an embedding lookup: random int32/int64 values would read out of its table
    (MiniLM: 'gather index out of bounds'); without --inputs the bench gives ids and masks of 0/1."""
    import numpy as np
    import tensorflow as tf

    table = tf.constant(np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.int32)])
    def embed(ids):
        return tf.reduce_mean(tf.gather(table, ids), axis=1)

    model = tmp_path / "embed.tflite"
    model.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([embed.get_concrete_function()], embed)
                      .convert())
    [r] = bench_host([model], HostBenchOptions(runs=3, warmup=1))
    assert r.ok, r.error
