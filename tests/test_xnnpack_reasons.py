"""XNNPACK's refusals that depend on a node's parameters get a reason computed from that node: an int8 ADD
whose second input's scale is far below the output's (a tiny epsilon constant, as quantized transformers and
log-mel front ends have) breaks the delegate's [2^-10, 2^8) input/output scale ratio, and the report says so;
the same ADD of a comparable tensor is delegated."""
from __future__ import annotations

import numpy as np

import tensorflow as tf  # a hard dependency: broken, it must fail the tests, not skip them

from edgeq.tflite.xnnpack import coverage, reason
from tests.conftest import tf_to_tflite


def _int8_add(eps: float) -> bytes:
    """y + y * eps after a dense layer: with eps = 1e-6 the second input's scale is ~1e-6 of the output's."""
    w = tf.constant(np.random.default_rng(1).normal(0, 0.2, (64, 32)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 64], tf.float32)])
    def f(x):
        y = tf.matmul(x, w)
        return y + y * eps

    rng = np.random.default_rng(0)
    return tf_to_tflite(f, lambda: ([rng.uniform(-1, 1, (1, 64)).astype(np.float32)] for _ in range(8)))


def test_an_int8_add_out_of_the_scale_ratio_range_is_named_with_its_ratio():
    cov = coverage(_int8_add(1e-6))
    assert cov.left.get("ADD int8") == 1, cov.summary
    line = next(r for r in cov.reasons() if r.startswith("ADD int8"))
    assert "scale ratio" in line and "below XNNPACK's [2^-10, 2^8)" in line, line
    ratio = float(line.split("scale ratio ")[1].split()[0])
    assert 1e-7 < ratio < 2.0 ** -10, line  # the node's own ratio, not a generic line


def test_the_same_add_within_the_range_is_delegated():
    cov = coverage(_int8_add(0.5))
    assert cov.whole, cov.summary


def test_type_refusals_name_the_type_the_delegate_takes():
    assert "float only" in reason("MAXIMUM", "int8") and "no int8 SOFTMAX kernel" in reason("SOFTMAX", "int8")
    assert "any type" in reason("LOG", "int8") and "any type" in reason("RELU_0_TO_1", "int8")
    # a bool RESHAPE is refused for its type, not for a run-time shape; int32 shape plumbing keeps the op's reason
    assert "no bool RESHAPE kernel" in reason("RESHAPE", "bool")
    assert "--batch 1" in reason("STRIDED_SLICE", "int32")
