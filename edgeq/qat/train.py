"""Fine-tuning the fake-quant model: range calibration, then a seeded, repeatable Keras training loop.

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

    epochs: int = 1
    learning_rate: float = 1e-4  # ~1/10 of a typical from-scratch Adam rate: QAT only nudges a trained model
    batch_size: int = 64
    seed: int = 0
    calib_samples: int = 512  # training samples that set the initial activation ranges (as PTQ would)


@dataclass(frozen=True)
class EpochStats:
    """One epoch of fine-tuning: training loss/accuracy (fake-quant model) and simulated-INT8 val top-1."""

    epoch: int
    epochs: int
    loss: float
    accuracy: float
    val_accuracy: float | None
    seconds: float

    def line(self) -> str:
        val = f"  val top-1 (simulated int8) {100 * self.val_accuracy:.2f}%" if self.val_accuracy is not None else ""
        return (f"epoch {self.epoch}/{self.epochs}  loss {self.loss:.4f}  accuracy {100 * self.accuracy:.2f}%"
                f"{val}  {self.seconds:.1f} s")

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


def check_labels(qat: QATModel, ds: Dataset) -> None:
    """Fine-tuning trains a single-output classifier on integer class ids: refuse anything else clearly."""
    if len(qat.model.outputs) != 1:
        raise DataError(f"{ds.source}: edgeq qat fine-tunes single-output classifiers; this model has "
                        f"{len(qat.model.outputs)} outputs")
    classes = int(qat.model.outputs[0].shape[-1])
    bad = (ds.labels < 0) | (ds.labels >= classes)
    if bad.any():
        raise DataError(f"{ds.source}: label {int(ds.labels[bad][0])} at sample {int(np.argmax(bad))} is not a "
                        f"class id of the model's {classes} outputs; give labels 0..{classes - 1}")


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


def simulated_top1(qat: QATModel, ds: Dataset, batch_size: int = 256) -> float:
    """Top-1 of the fake-quant model (what the INT8 model should give) on labeled data."""
    out = qat.model.predict(_single_input(qat, ds), batch_size=batch_size, verbose=0)
    return metrics.top1(np.asarray(out), ds.labels)


def train(qat: QATModel, train_ds: Dataset, val_ds: Dataset | None, config: TrainConfig,
          progress: Progress | None = None, on_epoch: Callable[[EpochStats], None] | None = None) -> list[EpochStats]:
    """Fine-tune ``qat.model`` (its float weights live in ``qat.float_model``) for ``config.epochs`` epochs."""
    import keras

    progress = progress or Silent()
    check_labels(qat, train_ds)
    from_logits = qat.output_activation != "softmax"
    qat.model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
                      metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    x, y = _single_input(qat, train_ds), train_ds.labels.astype(np.int64)
    steps = -(-len(train_ds) // config.batch_size)
    history: list[EpochStats] = []
    rng = np.random.default_rng(config.seed)
    for epoch in range(1, config.epochs + 1):
        t = time.perf_counter()
        order = rng.permutation(len(y))  # our own shuffle: the data order depends on the seed only
        xe = x[order] if not isinstance(x, list) else [a[order] for a in x]
        with progress.task(f"fine-tuning epoch {epoch}/{config.epochs}", total=steps) as step:
            cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: step.advance())
            h = qat.model.fit(xe, y[order], batch_size=config.batch_size, epochs=1, shuffle=False, verbose=0,
                              callbacks=[cb])
        val = simulated_top1(qat, val_ds) if val_ds is not None else None
        stats = EpochStats(epoch, config.epochs, float(h.history["loss"][-1]), float(h.history["accuracy"][-1]),
                           val, time.perf_counter() - t)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history
