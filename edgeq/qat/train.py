"""Fine-tuning the fake-quant model: range calibration, then a seeded, repeatable training loop.

The training signal is the labels when the data has them, otherwise the float model itself (distillation:
its outputs on the training images are soft targets; cross-entropy on softmax/classifier heads, MSE scaled by
the target's variance on regression heads); ``distill_weight`` mixes both. After each epoch the INT8 model
(exported and run in LiteRT when the caller passes ``export``, else the simulation) is compared with the float
model on the validation data (top-1 when training on labels); training
stops when that has not improved for ``patience`` epochs, and the best epoch's weights (possibly the
calibrated start) are kept.

Nothing here writes files: an interrupted run (Ctrl-C) leaves no output because outputs are written only
after training, by the caller, atomically.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgeq import metrics
from edgeq.data import Dataset
from edgeq.errors import DataError
from edgeq.progress import Progress, Silent

if TYPE_CHECKING:
    from edgeq.qat.rewrite import QATModel


@dataclass(frozen=True)
class TrainConfig:
    """How the fake-quant model is fine-tuned."""

    epochs: int = 1  # at most; early stopping may end sooner
    learning_rate: float = 1e-4  # ~1/10 of a typical from-scratch Adam rate: QAT only nudges a trained model
    batch_size: int = 64
    seed: int = 0
    calib_samples: int = 512  # training samples that set the initial activation ranges (as PTQ would)
    distill_weight: float | None = None  # share of the distillation loss; None: 0 with labels, 1 without
    patience: int = 2  # epochs without a better validation agreement before stopping
    temperature: float = 1.0  # distillation temperature on classifier heads (Hinton et al.; loss scaled by T^2)
    freeze_ranges: bool = False  # keep the calibrated activation ranges (PTQ's) instead of following an EMA
    # softmax heads: train the student's int8 logits (what TFLite's SOFTMAX reads), not its probabilities on
    # the 1/256 output grid, whose zeros (p < 1/512) made log-probabilities at a temperature meaningless
    student_logits: bool = False


@dataclass(frozen=True)
class EpochStats:
    """One epoch: training loss (and accuracy with labels); the INT8 model against float on val."""

    epoch: int
    epochs: int
    loss: float
    accuracy: float | None
    val_accuracy: float | None  # top-1 on labelled validation data
    seconds: float
    val_agreement: float | None = None  # top-1 agreement with the float model (first head)
    val_sqnr_db: float | None = None  # all heads
    best: bool = False

    def line(self) -> str:
        acc = f"  accuracy {100 * self.accuracy:.2f}%" if self.accuracy is not None else ""
        val = f"  val top-1 (int8) {100 * self.val_accuracy:.2f}%" if self.val_accuracy is not None else ""
        agr = (f"  val agreement with float {100 * self.val_agreement:.2f}%"
               if self.val_agreement is not None else "")
        sq = f"  SQNR {self.val_sqnr_db:.1f} dB" if self.val_sqnr_db is not None else ""
        return (f"epoch {self.epoch}/{self.epochs}  loss {self.loss:.4f}{acc}{val}{agr}{sq}  {self.seconds:.1f} s"
                + ("  (best)" if self.best else ""))

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def seed_everything(seed: int) -> None:
    """Same seed, same data order, dropout masks and weights: repeatable runs (CPU)."""
    import keras

    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _single_input(qat: QATModel, ds: Dataset) -> np.ndarray | list[np.ndarray]:
    names = [t.name for t in qat.float_model.inputs]
    arrays = [ds.inputs[n] if n in ds.inputs else next(iter(ds.inputs.values())) for n in names]
    return arrays[0] if len(arrays) == 1 else arrays


def _outputs(model, x, batch_size: int = 256) -> list[np.ndarray]:
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def check_labels(qat: QATModel, ds: Dataset) -> None:
    """Labels are class ids of the first output head: refuse anything else clearly (no labels is fine)."""
    if ds.labels is None:
        return
    classes = int(qat.model.outputs[0].shape[-1])
    bad = (ds.labels < 0) | (ds.labels >= classes)
    if bad.any():
        raise DataError(f"{ds.source}: label {int(ds.labels[bad][0])} at sample {int(np.argmax(bad))} is not a "
                        f"class id of the model's {classes} outputs (first head); give labels 0..{classes - 1}")


def distill_weight(config: TrainConfig, ds: Dataset) -> float:
    """The distillation share: as configured, else 0 with labels and 1 without; refuses labels it lacks."""
    labelled = ds.labels is not None
    w = config.distill_weight if config.distill_weight is not None else (0.0 if labelled else 1.0)
    if not labelled and w < 1.0:
        raise DataError(f"{ds.source}: has no labels 'y', so the training signal can only be distillation from "
                        f"the float model (--distill-weight {w:g} asks for labels); drop --distill-weight or add "
                        "labels 'y'")
    return w


def calibrate(qat: QATModel, train: Dataset, config: TrainConfig, progress: Progress) -> int:
    """Set every activation range from float activations on training samples, as PTQ calibration does."""
    quantizers = qat.quantizers()
    x = _single_input(qat, train.take(config.calib_samples))
    n = len(x if not isinstance(x, list) else x[0])
    for q in quantizers:
        q.calibrating = True
    try:
        with progress.task(f"calibrating activation ranges on {n} samples", total=n) as step:
            for start in range(0, n, config.batch_size):
                batch = x[start:start + config.batch_size] if not isinstance(x, list) else \
                    [a[start:start + config.batch_size] for a in x]
                qat.model(batch, training=False)
                step.advance(len(batch if not isinstance(batch, list) else batch[0]))
    finally:
        for q in quantizers:
            q.calibrating = False
    return n


def simulated_top1(qat: QATModel, ds: Dataset, batch_size: int = 256) -> float | None:
    """Top-1 of the fake-quant model (what the INT8 model should give) on labelled data; None without labels."""
    if ds.labels is None:
        return None
    return metrics.top1(_outputs(qat.model, _single_input(qat, ds), batch_size)[0], ds.labels)


@dataclass(frozen=True)
class Agreement:
    """The simulated INT8 model against the float model's outputs on one data set."""

    agreement: float | None  # first head, when it has classes
    sqnr_db: float
    top1: float | None = None  # first head, on labelled data

    def key(self, by_labels: bool) -> tuple[float, float]:
        """What early stopping maximizes: top-1 when training on labels, else agreement; then SQNR."""
        first = self.top1 if by_labels and self.top1 is not None else self.agreement
        return (first if first is not None else 0.0, self.sqnr_db)


def agreement_with_float(qat: QATModel, ds: Dataset, reference: list[np.ndarray]) -> Agreement:
    """Top-1 agreement (first head), SQNR (all heads) against ``reference``, and top-1 with labels."""
    return _compare(_outputs(qat.model, _single_input(qat, ds)), reference, ds)


def _compare(outs: list[np.ndarray], reference: list[np.ndarray], ds: Dataset) -> Agreement:
    """Top-1 agreement (first head), SQNR (all heads) of ``outs`` against ``reference``; top-1 with labels."""
    agree = metrics.agreement(reference[0], outs[0]) if reference[0].reshape(len(outs[0]), -1).shape[1] > 1 \
        else None
    r = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in reference], 1)
    o = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in outs], 1)
    top1 = metrics.top1(outs[0], ds.labels) if ds.labels is not None else None
    return Agreement(agree, float(metrics.sqnr_db(r, o)), top1)


def _losses(qat: QATModel, teacher: list[np.ndarray], labelled: bool):
    """Per head: 'ce' (classifier: softmax head, or the labelled first head) or 'mse' (regression), and the
    variance that makes each regression head's MSE scale-free."""
    kinds, scales = [], []
    for i, t in enumerate(teacher):
        act = qat.output_activations[i] if i < len(qat.output_activations) else None
        cls = act == "softmax" or (i == 0 and labelled and t.reshape(len(t), -1).shape[1] > 1)
        kinds.append("ce" if cls else "mse")
        scales.append(1.0 if cls else float(max(np.var(t), 1e-8)))
    return kinds, scales


def exported_agreement(qat: QATModel, ds: Dataset, reference: list[np.ndarray], export) -> Agreement:
    """``agreement_with_float`` of the model that ships: ``export(qat.model)`` -> .tflite bytes, run in LiteRT.

    On fer the simulation's agreement and the exported model's differ by 2-4 points either way (240 faces), so
    early stopping judged on the simulation picked epochs at random; judging the export costs one conversion
    per epoch."""
    return tflite_agreement(export(qat.model), ds, reference)


def tflite_agreement(content: bytes, ds: Dataset, reference: list[np.ndarray]) -> Agreement:
    """``agreement_with_float`` of a .tflite model (bytes), run in LiteRT on ``ds``."""
    from edgeq.runtime import TFLiteRunner

    return _compare(TFLiteRunner(content=content).run(ds.inputs), reference, ds)


def train(qat: QATModel, train_ds: Dataset, val_ds: Dataset | None, config: TrainConfig,
          progress: Progress | None = None, on_epoch: Callable[[EpochStats], None] | None = None,
          val_reference: list[np.ndarray] | None = None, export=None) -> list[EpochStats]:
    """Fine-tune ``qat.model`` (its float weights live in ``qat.float_model``) for up to ``config.epochs``.

    ``val_reference`` (the float model's outputs on ``val_ds``) turns on early stopping by agreement with float;
    without it the float model's current outputs are used. ``export`` (model -> .tflite bytes) judges each epoch
    by the exported INT8 model instead of the simulation. The best epoch's weights are restored at the end.
    """
    import keras

    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    progress = progress or Silent()
    check_labels(qat, train_ds)
    labelled = train_ds.labels is not None
    w = distill_weight(config, train_ds)
    x = _single_input(qat, train_ds)
    teacher = _outputs(qat.float_model, x)  # before any step: the float model's own outputs
    if val_ds is not None and val_reference is None:
        val_reference = _outputs(qat.float_model, _single_input(qat, val_ds))
    kinds, scales = _losses(qat, teacher, labelled)
    logits = [(qat.output_activations[i] if i < len(qat.output_activations) else None) != "softmax"
              for i in range(len(teacher))]
    # a classifier head that gives logits: the float model's probabilities are the soft targets
    teacher = [_softmax(t) if k == "ce" and lg else t for t, k, lg in zip(teacher, kinds, logits)]
    label_from_logits = logits[0]
    for q in qat.quantizers():
        q.frozen = bool(config.freeze_ranges)
    student = qat.model
    if config.student_logits:
        student, swapped = _logit_student(qat.model)
        logits = [lg or sw for lg, sw in zip(logits, swapped)]
        label_from_logits = logits[0]
    opt = keras.optimizers.Adam(config.learning_rate)
    variables = qat.model.trainable_variables
    opt.build(variables)
    n_heads = len(teacher)
    temp = float(config.temperature)

    def loss_fn(outs, targets, y):
        distill = 0.0
        for o, t, kind, scale, lg in zip(outs, targets, kinds, scales, logits):
            if kind == "ce" and temp != 1.0:
                # both sides softened: log-probabilities (or logits) / T; T^2 keeps the gradient scale (Hinton)
                zs = o if lg else tf.math.log(tf.clip_by_value(o, 1e-7, 1.0))
                pt = tf.nn.softmax(tf.math.log(tf.clip_by_value(t, 1e-7, 1.0)) / temp)
                distill += temp * temp * tf.reduce_mean(
                    keras.losses.categorical_crossentropy(pt, zs / temp, from_logits=True) - _entropy(pt))
            elif kind == "ce":
                # KL(teacher || student): the cross-entropy minus the teacher's entropy, a constant that does not
                # change the gradient but, with soft targets (fer: ~1.04 nats of 7 emotions), hid what training
                # moves: the reported loss is now 0 when the student matches the teacher
                distill += tf.reduce_mean(keras.losses.categorical_crossentropy(t, o, from_logits=lg) - _entropy(t))
            else:
                distill += tf.reduce_mean(tf.square(o - t)) / scale
        total = w * distill / n_heads
        if w < 1.0:
            total += (1.0 - w) * tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(y, outs[0], from_logits=label_from_logits))
        return total

    @tf.function(reduce_retracing=True)
    def step(xb, targets, yb):
        with tf.GradientTape() as tape:
            outs = student(xb, training=True)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            loss = loss_fn(outs, targets, yb)
        grads = tape.gradient(loss, variables)
        opt.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return loss, outs[0]

    y_all = train_ds.labels.astype(np.int64) if labelled else np.zeros(len(train_ds), np.int64)
    by_labels = w < 1.0  # training for the labels: judge epochs by val top-1 (when val has labels)
    def judge() -> Agreement | None:
        if val_ds is None:
            return None
        if export is not None:
            return exported_agreement(qat, val_ds, val_reference, export)
        return agreement_with_float(qat, val_ds, val_reference)

    best = judge()
    best_weights = qat.model.get_weights()
    history: list[EpochStats] = []
    rng = np.random.default_rng(config.seed)
    since_best = 0
    steps = -(-len(train_ds) // config.batch_size)
    for epoch in range(1, config.epochs + 1):
        t = time.perf_counter()
        order = rng.permutation(len(y_all))  # our own shuffle: the data order depends on the seed only
        losses, correct = [], 0
        with progress.task(f"fine-tuning epoch {epoch}/{config.epochs}", total=steps) as bar:
            for s in range(0, len(order), config.batch_size):
                idx = order[s:s + config.batch_size]
                xb = x[idx] if not isinstance(x, list) else [a[idx] for a in x]
                loss, out0 = step(xb, [tv[idx] for tv in teacher], y_all[idx])
                losses.append(float(loss) * len(idx))
                if labelled:
                    correct += int(np.sum(np.asarray(out0).reshape(len(idx), -1).argmax(-1) == y_all[idx]))
                bar.advance()
        agree = judge()
        improved = agree is not None and (best is None or agree.key(by_labels) > best.key(by_labels))
        if improved:
            best, best_weights, since_best = agree, qat.model.get_weights(), 0
        else:
            since_best += 1
        stats = EpochStats(epoch, config.epochs, sum(losses) / len(order),
                           correct / len(order) if labelled else None,
                           agree.top1 if agree else None,
                           time.perf_counter() - t,
                           agree.agreement if agree else None, agree.sqnr_db if agree else None, improved)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
        if val_ds is not None and since_best >= config.patience:
            break
    if val_ds is not None:
        qat.model.set_weights(best_weights)  # the best epoch, or the calibrated start if none beat it
    return history


def _logit_student(model):
    """``model`` with each softmax output replaced by the (fake-quantized) tensor its softmax reads; which
    outputs were replaced. Same layers and variables: training it trains ``model``."""
    import keras

    outs, swapped = [], []
    for t in model.outputs:
        op = t._keras_history.operation  # noqa: SLF001
        src = t
        if type(op).__name__ == "SoftmaxOutputRange":
            src = op._inbound_nodes[0].input_tensors[0]  # noqa: SLF001
            op = src._keras_history.operation  # noqa: SLF001
        from edgeq.qat.rewrite import activation_name

        if activation_name(op) == "softmax" and type(op).__name__ in ("Softmax", "Activation"):
            outs.append(op._inbound_nodes[0].input_tensors[0])  # noqa: SLF001
            swapped.append(True)
        else:
            outs.append(t)
            swapped.append(False)
    if not any(swapped):
        return model, swapped
    return keras.Model(model.inputs, outs if len(outs) > 1 else outs[0]), swapped


def _entropy(p):
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    return -tf.reduce_sum(p * tf.math.log(tf.clip_by_value(p, 1e-12, 1.0)), axis=-1)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)
