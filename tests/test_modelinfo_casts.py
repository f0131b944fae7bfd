"""modelinfo: CAST(integer -> float) feeding only QUANTIZE is an input conversion, not float compute."""
from __future__ import annotations

import numpy as np
import pytest

from edgeq.modelinfo import inspect_tflite


def _mask_model(int8: bool) -> bytes:
    """y = dense(x * mask): an integer mask input cast to float, like a transformer's attention mask."""
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    w = tf.constant(np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x"),
                                  tf.TensorSpec([1, 8], tf.int32, name="mask")])
    def f(x, mask):
        return tf.matmul(x * tf.cast(mask, tf.float32), w)

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    if int8:
        rng = np.random.default_rng(1)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, 8), np.float32),
                                                rng.integers(0, 2, (1, 8)).astype(np.int32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


@pytest.fixture(scope="module")
def int8_info():
    return inspect_tflite(content=_mask_model(int8=True))


def test_integer_input_cast_then_quantize_is_io_conversion(int8_info):
    assert int8_info.op_counts.get("CAST") == 1 and int8_info.op_counts.get("QUANTIZE", 0) >= 1
    assert int8_info.float_ops == []
    # fully_integer stays strict: the float input and output tensors are still there
    assert not int8_info.fully_integer


def test_cast_feeding_float_compute_is_still_float():
    info = inspect_tflite(content=_mask_model(int8=False))
    assert any(op.startswith("CAST") for op in info.float_ops)
    assert any(op.startswith("MUL") for op in info.float_ops)
