"""Keras 3 layers that simulate TFLite's full-INT8 arithmetic during training (fake quantization).

Why these layers and not TFMOT: tfmot 0.8.1 refuses Keras 3 models ("to_quantize can only either be a keras
Sequential or Functional model") and its working path needs tf_keras, which cannot load today's Keras 3
``.keras`` files. TensorFlow's own ``fake_quant_with_min_max_vars*`` ops work on Keras 3 (TF backend), have
straight-through gradients, and TFLiteConverter reads their min/max as the quantization parameters of the
tensors they sit on, so the exported model uses exactly the ranges the fine-tuning saw (no calibration pass).
Decided by experiment: this path converts the bundled Keras 3 samples to full-INT8 with per-channel weights,
and LiteRT's integer output matches the fake-quant model to within a few output steps (tests/test_qat.py).

What is simulated, as the converter will build it:
* weights: symmetric 8-bit ([-127, 127], ``narrow_range``), one scale per output channel for Conv2D and
  DepthwiseConv2D, one per tensor for Dense (per-channel fake-quant on a Dense kernel fails conversion with
  "mismatched quantized axes");
* BatchNormalization folded into the preceding layer's kernel and bias with its moving statistics (what the
  converter does), so the kernel that is fake-quantized is the kernel that ships;
* activations: one asymmetric 8-bit range per tensor after each op that gets its own scale in TFLite,
  after the fused ReLU/ReLU6 (TFLite fuses them into the producing op).
"""
from __future__ import annotations

import keras

from edgeq.tfenv import quiet_tf

tf = quiet_tf()


def fake_quant_weights(kernel, channel_axis_last: bool):
    """Symmetric 8-bit fake quantization: per channel (last axis) or per tensor."""
    if channel_axis_last:
        axes = list(range(len(kernel.shape) - 1))
        m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=axes), 1e-8))
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, -m, m, num_bits=8, narrow_range=True)
    m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel)), 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars(kernel, -m, m, num_bits=8, narrow_range=True)


def rounded_per_output(kernel):
    """Per-output-channel symmetric int8 rounding of a Dense kernel (in, out), with a straight-through gradient.

    A FakeQuant per-channel op on a Dense kernel fails conversion ("'tfl.transpose' op has mismatched quantized
    axes": TFLite stores the kernel transposed). Plain ops instead put the constant on the int8 grid; the
    converter then quantizes it per channel itself, exactly (each column's max maps to 127).
    """
    m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=0), 1e-8))
    scale = m / 127.0
    q = tf.clip_by_value(tf.round(kernel / scale), -127.0, 127.0) * scale
    return kernel + tf.stop_gradient(q - kernel)


class ActivationQuantizer(keras.layers.Layer):
    """Per-tensor 8-bit fake quantization of an activation, with a range tracked as TFLite needs it.

    ``calibrating`` (a Python flag, set only for eager calls before training) records the float range like
    post-training calibration does, so fine-tuning starts from the PTQ model; training then follows the
    range with an exponential moving average, as TFMOT's moving-average quantizer does.
    """

    def __init__(self, ema: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.ema = ema
        self.calibrating = False
        self.frozen = False  # a Python flag read when training traces: keep the calibrated range

    def build(self, input_shape):
        self.min = self.add_weight(name="min", shape=(), initializer="zeros", trainable=False)
        self.max = self.add_weight(name="max", shape=(), initializer="zeros", trainable=False)

    def call(self, x, training=None):
        if self.calibrating:
            self.min.assign(tf.minimum(self.min, tf.reduce_min(x)))
            self.max.assign(tf.maximum(self.max, tf.reduce_max(x)))
            return x
        if training and not self.frozen:
            # The range must contain 0 so that zero (padding, ReLU) is exact, as in TFLite.
            lo = tf.minimum(tf.reduce_min(x), 0.0)
            hi = tf.maximum(tf.reduce_max(x), 0.0)
            self.min.assign(self.ema * self.min + (1.0 - self.ema) * lo)
            self.max.assign(self.ema * self.max + (1.0 - self.ema) * hi)
        return tf.quantization.fake_quant_with_min_max_vars(x, self.min, self.max, num_bits=8, narrow_range=False)

    def compute_output_shape(self, input_shape):
        return input_shape


_ACTIVATIONS = {None: None, "relu": tf.nn.relu, "relu6": tf.nn.relu6}


def fixed_range(y, lo: float, hi: float):
    """TFLite's fixed int8 output range of LOGISTIC ([0, 255/256]) and TANH ([-1, 127/128])."""
    return tf.quantization.fake_quant_with_min_max_vars(y, lo, hi, num_bits=8, narrow_range=False)


def simulated_activation(name: str, x):
    """A standalone activation as TFLite runs it in int8: the op, plus the fixed-range tensor it makes inside.

    The converter lowers these to HARD_SWISH, LOGISTIC, TANH, LEAKY_RELU, and swish to LOGISTIC + MUL (checked
    by conversion in tests/test_qat_layers.py); the output range is the caller's ActivationQuantizer.
    """
    if name == "sigmoid":
        return fixed_range(tf.sigmoid(x), 0.0, 255.0 / 256.0)
    if name == "tanh":
        return fixed_range(tf.tanh(x), -1.0, 127.0 / 128.0)
    if name in ("swish", "silu"):
        return x * fixed_range(tf.sigmoid(x), 0.0, 255.0 / 256.0)
    if name == "hard_swish":
        return keras.activations.hard_swish(x)
    if name == "relu":
        return tf.nn.relu(x)
    if name == "relu6":
        return tf.nn.relu6(x)
    raise ValueError(name)


class SimulatedActivation(keras.layers.Layer):
    """One of STANDALONE as TFLite's int8 kernel computes it (see ``simulated_activation``)."""

    def __init__(self, activation: str, **kwargs):
        super().__init__(**kwargs)
        self.activation_name = activation

    def call(self, x):
        return simulated_activation(self.activation_name, x)

    def compute_output_shape(self, input_shape):
        return input_shape


class SoftmaxOutputRange(keras.layers.Layer):
    """TFLite's int8 SOFTMAX output: fixed scale 1/256, zero point -128, i.e. the range [0, 255/256].

    Without it the simulation's probabilities were exact, while the integer model's are on a 1/256 grid (ties
    resolved by index; on fer, 4 of 240 held-apart faces have a float top-2 margin under 1/256). This makes the
    simulated output the exported one's up to integer rounding; it did not close fer's gap between simulated
    and exported agreement (rounding elsewhere flips borderline faces either way; SQNR agrees to ~0.3 dB).
    """

    def call(self, x):
        return fixed_range(x, 0.0, 255.0 / 256.0)

    def compute_output_shape(self, input_shape):
        return input_shape


# Their output range is fixed by TFLite: no ActivationQuantizer of their own after them.
FIXED_RANGE = ("sigmoid", "tanh")
# Activations the rewrite simulates as their own op after a conv/dense/add (relu/relu6 fuse instead).
STANDALONE = ("sigmoid", "tanh", "swish", "silu", "hard_swish")


class FoldedQuantLayer(keras.layers.Layer):
    """Conv2D / DepthwiseConv2D / Dense [+ BatchNormalization] [+ ReLU/ReLU6] as one quantized TFLite op.

    SeparableConv2D is what the converter makes of it: DEPTHWISE_CONV_2D (no bias, its own output range) then
    a 1x1 CONV_2D that takes the bias, the BatchNorm and the activation.

    ``core`` and ``bn`` are the float model's own layers: their variables are trained in place, so after
    fine-tuning the float model (same architecture as the input) holds the fine-tuned weights. The BN moving
    statistics stay frozen: they are what the converter folds, so the folding seen in training is exact.
    """

    def __init__(self, core, bn=None, activation: str | None = None, ema: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.core = core
        self.bn = bn
        self.activation_name = activation
        self.kind = type(core).__name__
        self.out_quant = ActivationQuantizer(ema=ema, name=f"{self.name}_out")
        self.mid_quant = ActivationQuantizer(ema=ema, name=f"{self.name}_dw") if self.kind == "SeparableConv2D" \
            else None

    def build(self, input_shape):
        self.out_quant.build(None)
        if self.mid_quant is not None:
            self.mid_quant.build(None)

    def folded(self):
        """The kernel and bias the converter will ship: BN folded in with its moving statistics."""
        kernel = self.core.pointwise_kernel if self.kind == "SeparableConv2D" else self.core.kernel
        bias = self.core.bias if self.core.use_bias else None
        if self.bn is None:
            return kernel, (bias if bias is not None else tf.zeros([self._channels()], kernel.dtype))
        bn = self.bn
        inv = tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        scale = inv * bn.gamma if bn.scale else inv
        shift = bn.beta if bn.center else tf.zeros_like(scale)
        if self.kind == "DepthwiseConv2D":
            kh, kw, cin, mult = kernel.shape
            kernel = kernel * tf.reshape(scale, (cin, mult))
        else:
            kernel = kernel * scale
        b = bias if bias is not None else tf.zeros_like(scale)
        return kernel, (b - bn.moving_mean) * scale + shift

    def _channels(self) -> int:
        if self.kind == "SeparableConv2D":
            return self.core.pointwise_kernel.shape[-1]
        k = self.core.kernel.shape
        return k[2] * k[3] if self.kind == "DepthwiseConv2D" else k[-1]

    def quantized_kernel(self, kernel, kind: str | None = None):
        kind = kind or self.kind
        if kind == "DepthwiseConv2D":  # TFLite's depthwise filter is (1, kh, kw, in*mult): per channel
            kh, kw, cin, mult = kernel.shape
            flat = fake_quant_weights(tf.reshape(kernel, (kh, kw, cin * mult)), channel_axis_last=True)
            return tf.reshape(flat, (kh, kw, cin, mult))
        if kind == "Dense":
            return rounded_per_output(kernel)
        return fake_quant_weights(kernel, channel_axis_last=True)

    def call(self, x, training=None):
        kernel, bias = self.folded()
        kernel = self.quantized_kernel(kernel)
        c = self.core
        if self.kind == "SeparableConv2D":
            dw = self.quantized_kernel(c.depthwise_kernel, "DepthwiseConv2D")
            mid = keras.ops.depthwise_conv(x, dw, strides=c.strides, padding=c.padding,
                                           dilation_rate=c.dilation_rate, data_format=c.data_format)
            mid = self.mid_quant(mid, training=training)
            y = keras.ops.conv(mid, kernel, strides=1, padding="valid", data_format=c.data_format)
        elif self.kind == "Conv2D":
            y = c.convolution_op(x, kernel)
        elif self.kind == "DepthwiseConv2D":
            y = keras.ops.depthwise_conv(x, kernel, strides=c.strides, padding=c.padding,
                                         dilation_rate=c.dilation_rate, data_format=c.data_format)
        else:
            y = keras.ops.matmul(x, kernel)
        if self.kind != "Dense" and c.data_format == "channels_first":
            y = y + tf.reshape(bias, (1, -1) + (1,) * (len(y.shape) - 2))
        else:
            y = y + bias
        act = _ACTIVATIONS[self.activation_name]
        if act is not None:
            y = act(y)
        return self.out_quant(y, training=training)

    def compute_output_shape(self, input_shape):
        shape = self.core.compute_output_shape(input_shape)
        return shape
