"""A full-INT8 concatenation of very different ranges (a detector's boxes in pixels beside its class scores)
loses the small input: the conversion report names the op, the input and what to do."""
from __future__ import annotations

import numpy as np
import pytest

import edgeq

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _head(box_scale: float):
    """Boxes (a Dense output scaled by ``box_scale``) concatenated with sigmoid class scores, like a YOLO head."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((8,))
    h = keras.layers.Dense(16, activation="relu")(inp)
    boxes = keras.layers.Rescaling(box_scale)(keras.layers.Dense(4)(h))
    scores = keras.layers.Dense(3, activation="sigmoid", name="scores")(h)
    return keras.Model(inp, keras.layers.Concatenate(name="head")([boxes, scores]))


@pytest.mark.parametrize("box_scale, warned", [(300.0, True), (1.0, False)])
def test_a_concat_that_squeezes_class_scores_is_named_in_the_report(tmp_path, box_scale, warned):
    calib = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    report = edgeq.convert(_head(box_scale), edgeq.ConvertOptions(mode="int8", ptq="plain", calib=calib),
                           out=tmp_path / "head.tflite")
    found = [w for w in report.warnings if w.startswith("CONCATENATION")]
    if not warned:
        assert found == []
        return
    assert len(found) == 1, report.warnings
    assert "scores" in found[0] and "--mode int16x8" in found[0]
    assert "steps" in found[0] and float(found[0].split(" onto ")[1].split(" ")[0]) < 1.0
