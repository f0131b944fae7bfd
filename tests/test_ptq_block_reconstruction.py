"""Block reconstruction (``block_reconstruction``): blocks are cut where one tensor is alive, the TensorFlow
simulation of a block reproduces the INT8 model LiteRT runs, and the fitted integers are the converter's and
bring the INT8 model closer to float on the samples they were fitted on."""
from __future__ import annotations

import re

import numpy as np
import pytest

from conftest import calibrate_keras

import keras  # a hard dependency: broken, it must fail the tests, not skip them


def _residual_model():
    """A stem conv, two inverted residual blocks (expand, depthwise, project, add) and a dense head."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    y = keras.layers.ReLU(6.0)(keras.layers.Conv2D(8, 3, strides=2, padding="same")(inp))
    for _ in range(2):
        z = keras.layers.ReLU(6.0)(keras.layers.Conv2D(24, 1)(y))
        z = keras.layers.ReLU(6.0)(keras.layers.DepthwiseConv2D(3, padding="same")(z))
        y = keras.layers.Add()([y, keras.layers.Conv2D(8, 1)(z)])
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(5)(y))


@pytest.fixture(scope="module")
def residual():
    model = _residual_model()
    x = np.random.default_rng(0).uniform(-1, 1, (40, 16, 16, 3)).astype(np.float32)
    cal, feeds = calibrate_keras(model, x, int8_io=True)
    return model, cal, feeds


def _kinds(content: bytes, block) -> list[str]:
    from edgeq.tflite import flatbuffer as fb

    model = fb.load(content)
    names = fb.op_names(model)
    return [names[model.subgraphs[0].operators[k].opcodeIndex] for k in block.ops]


def test_blocks_keep_each_inverted_residual_whole(residual):
    from edgeq.quantize.prepare.block_simulation import blocks
    from edgeq.tflite import flatbuffer as fb

    _, cal, _ = residual
    content = cal.quantize()
    found = blocks(fb.load(content), max_layers=3)
    kinds = [_kinds(content, b) for b in found]
    # the stem conv cannot join the first residual block (3 + 1 layers > 3): each residual block is whole
    assert [k.count("ADD") for k in kinds] == [0, 1, 1, 0]
    assert kinds[1] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD"]
    assert "QUANTIZE" not in sum(kinds, [])  # the int8 input's QUANTIZE is not simulated
    assert kinds[-1][-1] == "FULLY_CONNECTED"
    assert all(a.out == b.inp for a, b in zip(found, found[1:]))


def test_simulation_reproduces_litert_on_the_int8_grid(residual):
    """With the converter's own integers, each simulated block gives LiteRT's int8 output within one step
    (TensorFlow's float math and LiteRT's integer requantization round a few values differently)."""
    from edgeq.quantize.prepare.activations import TensorTable, int_feeds, run_each_sample
    from edgeq.quantize.prepare.block_simulation import Simulation, blocks
    from edgeq.tflite import flatbuffer as fb

    _, cal, feeds = residual
    content = cal.quantize()
    model = fb.load(content)
    table = TensorTable.of_model(model)
    for block in blocks(model):
        runs = list(run_each_sample(content, int_feeds(content, feeds), [block.inp, block.out], limit=8))
        x = np.concatenate([table.real(block.inp, r[block.inp]) for r in runs])
        want = np.concatenate([table.real(block.out, r[block.out]) for r in runs])
        got = Simulation(model, block, table, {})(x, hard=True).numpy()
        step = table.quantized[block.out][0]
        off = np.abs(got - want) / step
        assert off.max() <= 1.01 and (off > 0.5).mean() < 0.02, (_kinds(content, block), off.max())


# drop 0.5: QDrop, half the block's input values float while fitting; ranges: activation ranges fitted too
@pytest.mark.parametrize("drop, ranges", [(0.0, False), (0.5, False), (0.0, True)])
def test_reconstruction_writes_the_converters_integers_and_fits_closer(residual, drop, ranges):
    from edgeq.modelinfo import inspect_tflite
    from edgeq.quantize.prepare.activations import TensorTable
    from edgeq.quantize.prepare.block_reconstruction import reconstruct
    from edgeq.runtime import TFLiteRunner

    model, cal, feeds = residual
    done = reconstruct(cal, feeds, iters=150, drop=drop, ranges=ranges)
    assert done is not None and done.layers >= 4
    # the converter, quantizing the edited calibrated model, writes exactly the integers fitted in place
    assert done.calibrated.quantize() == done.content
    assert bool(done.ranges) == ranges
    table = TensorTable.of(done.content)
    for name, (lo, hi) in done.ranges.items():  # and the activation grids the simulation fitted on
        scale, zero = table.quantized[table.index[name]]
        assert scale == pytest.approx((hi - lo) / 255, rel=1e-5) and zero == round(-128 - lo / scale)
    info = inspect_tflite(content=done.content)
    assert not info.float_ops and {t.dtype for t in info.inputs + info.outputs} == {"int8"}
    (x,) = feeds.values()
    ref = model.predict(x, verbose=0)

    def sqnr(content: bytes) -> float:
        (y,) = TFLiteRunner(content=content).run(feeds)
        return float(10 * np.log10((ref ** 2).sum() / ((ref - y) ** 2).sum()))

    # +0.8 dB measured without ranges, +1.2 dB with them; nearest is 44.3 dB
    assert sqnr(done.content) > sqnr(cal.quantize()) + 0.4


def test_a_block_with_an_op_it_cannot_simulate_is_left_out():
    from edgeq.quantize.prepare.block_simulation import blocks
    from edgeq.tflite import flatbuffer as fb

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="same")(inp)
    y = keras.layers.Lambda(lambda t: keras.ops.sin(t))(y)  # SIN: float in an INT8 model, never simulated
    out = keras.layers.Conv2D(4, 1)(y)
    x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 3)).astype(np.float32)
    cal, _ = calibrate_keras(keras.Model(inp, out), x, int8_io=True)
    content = cal.quantize()
    kinds = [_kinds(content, b) for b in blocks(fb.load(content))]
    assert all("SIN" not in k and "DEQUANTIZE" not in k for k in kinds)


def test_ptq_blocks_has_block_reconstruction_compete_with_layer_rounding(residual, tmp_path):
    from edgeq.convert import convert
    from edgeq.modes import ConvertOptions, Mode

    model, _, feeds = residual
    model.save(tmp_path / "residual.keras")
    (x,) = feeds.values()
    r = convert(tmp_path / "residual.keras", ConvertOptions(mode=Mode.INT8, calib=x, ptq="blocks"),
                out=tmp_path / "blocks.tflite")
    *_, step = r.extra["ptq"]["steps"]
    assert step["name"] == "rounding"  # one step whose alternatives compete, not two steps one after the other
    assert "sequential_rounding" not in [s["name"] for s in r.extra["ptq"]["steps"]]
    # both alternatives fitted and scored on the held-back quarter; the better one is the step's result
    tried = re.search(r"tried sequential_rounding (-?[\d.]+) dB, block_reconstruction (-?[\d.]+) dB", step["detail"])
    assert tried and step["judged_on"] == "held-back"
    held_back_db = {"sequential_rounding": float(tried.group(1)), "block_reconstruction": float(tried.group(2))}
    best = max(held_back_db, key=held_back_db.get)
    assert step["label"] == best and step["score"]["sqnr_db"] == pytest.approx(held_back_db[best], abs=0.05)
    assert r.model.fully_integer and not r.model.float_ops


def test_one_alternative_failing_leaves_the_others():
    from edgeq.quantize.prepare.step import Backend, Candidate, OneOf

    class Works:
        name, backend, needs_held_back = "works", Backend.CALIBRATED, False

        def candidates(self, model, fit):
            return [Candidate(model + 1, "added one")]

    class Fails(Works):
        name, needs_held_back = "fails", True

        def candidates(self, model, fit):
            raise ValueError("cannot simulate op SIN\nsecond line")

    (c,) = OneOf("either", (Fails(), Works())).candidates(1, {})
    assert (c.model, c.label, c.detail) == (2, "works", "added one; fails not applicable: cannot simulate op SIN")
    assert OneOf("either", (Fails(), Works())).needs_held_back
    with pytest.raises(ValueError, match="SIN"):
        OneOf("both fail", (Fails(), Fails())).candidates(1, {})
