"""A full-INT8 concatenation of very different ranges (a detector's boxes in pixels beside its class scores)
loses the small input: the conversion report names the op, the input and what to do."""
from __future__ import annotations

from pathlib import Path

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



def test_an_op_reading_int8_beside_float_is_found_and_is_what_litert_refuses():
    """TF's quantizer, asked to keep NudeNet's output concat float, keeps it int8 and feeds it one float input
    (LiteRT: 'failed to delegate CONCATENATION'); ``Calibrated.quantize`` then widens the float set until
    ``mixed_activation_ops`` finds none. Here the broken form is made by hand from the toy head: the float
    concat is rewired to read one producer's int8 tensor instead of its DEQUANTIZE."""
    from edgeq.errors import ModelLoadError
    from edgeq.modes import IOType
    from edgeq.quantize.selective import Calibrated
    from edgeq.runtime import TFLiteRunner
    from edgeq.sources.keras import from_keras_object
    from edgeq.tflite import flatbuffer as fb
    from edgeq.tflite.flatbuffer import mixed_activation_ops

    x = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    with from_keras_object(_head(300.0), Path("head.keras")) as fm:
        name = fm.inputs[0].name
        cal = Calibrated.from_saved_model(fm.saved_model_dir, lambda: ({name: s[None]} for s in x[:16]), True,
                                          IOType.FLOAT32, "head")
    concat = next(layer.node for layer in cal.layers() if layer.op == "CONCATENATION")
    kept = cal.quantize(float_nodes=[concat])
    assert mixed_activation_ops(kept) == []
    TFLiteRunner(content=kept).run({name: x[:2]})

    model = fb.load(kept)
    sg, names = model.subgraphs[0], fb.op_names(model)
    by_out = {int(op.outputs[0]): op for op in sg.operators}
    cat = next(op for op in sg.operators if names[op.opcodeIndex] == "CONCATENATION"
               and sg.tensors[int(op.outputs[0])].type == fb.FLOAT32)
    deq = next(by_out[int(i)] for i in cat.inputs if names[by_out[int(i)].opcodeIndex] == "DEQUANTIZE")
    cat.inputs = np.array([int(deq.inputs[0]) if int(i) == int(deq.outputs[0]) else int(i) for i in cat.inputs])
    broken = fb.dump(model)
    [(op, _, ints)] = mixed_activation_ops(broken)
    assert op == "CONCATENATION" and ints == [fb.tensor_name(sg, int(deq.inputs[0]))]
    with pytest.raises(ModelLoadError):
        TFLiteRunner(content=broken).run({name: x[:2]})
