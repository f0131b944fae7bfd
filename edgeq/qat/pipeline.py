"""``edgeq qat finetune``: measure post-training INT8, fine-tune with simulated INT8, export, report.

One run answers the user's question "did QAT pay off?": the report carries the float model's top-1, the
post-training full-INT8 model's (made by ``edgeq.convert`` exactly as ``edgeq convert`` would) and the
QAT model's, all on ``--val``, plus the cost of fine-tuning.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgeq import metrics
from edgeq.convert import convert
from edgeq.data import load_dataset
from edgeq.errors import ModelLoadError
from edgeq.evaluate import evaluate
from edgeq.modes import ConvertOptions, IOType, Mode
from edgeq.progress import Progress, Silent
from edgeq.qat import export
from edgeq.qat.train import EpochStats, TrainConfig, calibrate, seed_everything, simulated_top1, train
from edgeq.report import ConversionReport
from edgeq.sources import load_float_model, source_kind


@dataclass(frozen=True)
class QATOptions:
    """Everything that decides what ``finetune`` produces."""

    train: TrainConfig = TrainConfig()
    io: IOType = IOType.INT8  # full-INT8 models take and give int8, as with edgeq convert --mode int8
    ptq_calib_samples: int = 300  # training samples for the post-training INT8 baseline


def _ptq_baseline(source: Path, train_x: np.ndarray, val, options: QATOptions, work: Path,
                  progress: Progress) -> ConversionReport:
    """Post-training full-INT8 through ``edgeq.convert`` (calibrated on training samples), evaluated on val."""
    calib = work / "calib.npz"
    np.savez(calib, x=train_x)
    return convert(source, ConvertOptions(mode=Mode.INT8, io=options.io, calib=calib), out=work / "ptq.tflite",
                   eval_data=val, progress=progress)


def finetune(model: Path | str, train_data: Path | str, val_data: Path | str, out_dir: Path | str,
             options: QATOptions | None = None, progress: Progress | None = None,
             on_epoch: Callable[[EpochStats], None] | None = None) -> ConversionReport:
    """Fine-tune ``model`` (.keras/.h5) with simulated INT8 and write ``<out_dir>/<stem>_qat_int8.tflite``
    (full integer) and ``<out_dir>/<stem>_qat.keras`` (the fine-tuned float model).

    ``train_data``/``val_data`` are .npz files with inputs ``x`` and integer labels ``y``, or in-memory data
    with labels (an ``(x, y)`` tuple, a dict with ``"y"``, an iterable or ``tf.data.Dataset`` of ``(x, y)``).
    """
    options = options or QATOptions()
    progress = progress or Silent()
    source, out_dir = Path(model), Path(out_dir)
    kind = source_kind(source)
    export.check_out_dir(out_dir, source)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with progress.task(f"loading {source.name}"):
        fm = load_float_model(source)
    with fm, tempfile.TemporaryDirectory(prefix="edgeq-qat-") as tmp:
        keras_model = fm.extra.get("keras_model")
        if keras_model is None:
            raise ModelLoadError(f"{source}: QAT rewrites Keras layers, and a {kind} graph has none; give the "
                                 ".keras or .h5 file the model was trained as")
        train_ds = load_dataset(train_data, fm.inputs, require_labels=True, name="train_data")
        val_ds = load_dataset(val_data, fm.inputs, require_labels=True, name="val_data")
        reference = fm.predict(val_ds.inputs)
        from edgeq.qat.rewrite import rewrite
        from edgeq.qat.train import check_labels

        seed_everything(options.train.seed)  # before the rewrite: new Dropout layers draw their seeds there
        qat = rewrite(keras_model)  # an unsupported layer fails here, in seconds, before any conversion
        check_labels(qat, train_ds)
        check_labels(qat, val_ds)
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        rng = np.random.default_rng(options.train.seed)
        pick = np.sort(rng.choice(len(train_ds), min(options.ptq_calib_samples, len(train_ds)), replace=False))
        # val as read once (a generator given as val_data cannot be read a second time)
        ptq = _ptq_baseline(source, next(iter(train_ds.inputs.values()))[pick], {**val_ds.inputs, "y": val_ds.labels},
                            options, Path(tmp), progress)
        timings["ptq_int8"] = time.perf_counter() - t

        t = time.perf_counter()
        calibrate(qat, train_ds, options.train, progress)
        start_top1 = simulated_top1(qat, val_ds)
        history = train(qat, train_ds, val_ds, options.train, progress, on_epoch)
        timings["finetune"] = time.perf_counter() - t

        t = time.perf_counter()
        with progress.task("converting the fine-tuned model to full INT8"):
            content = export.to_tflite(qat.model, options.io, source)
            info = export.inspect_export(content, options.io, source)
        timings["export"] = time.perf_counter() - t
        t = time.perf_counter()
        accuracy = evaluate(content, val_ds, reference, progress)
        tuned_float = metrics.top1(qat.float_model.predict(next(iter(val_ds.inputs.values())), verbose=0,
                                                           batch_size=256), val_ds.labels)
        timings["eval"] = time.perf_counter() - t

        tfl, keras_path = export.write_outputs(out_dir, source, content, qat.float_model)
        info.path = str(tfl)
    qat_section = _qat_section(options, len(train_ds), history, start_top1, tuned_float, ptq, accuracy,
                               timings["finetune"], keras_path, qat.fused)
    return ConversionReport(
        source=str(source), source_kind=kind, output=str(tfl), mode=Mode.INT8.value, io=options.io.value,
        per_channel=True, size_bytes=len(content), float_size_bytes=ptq.float_size_bytes, model=info,
        calib_samples=None, accuracy=accuracy,
        notes=list(dict.fromkeys(list(fm.notes) + train_ds.notes + val_ds.notes)), timings_s=timings,
        extra={"qat": qat_section})


def _qat_section(options: QATOptions, n_train: int, history: list[EpochStats], start_top1: float,
                 tuned_float: float, ptq: ConversionReport, accuracy, seconds: float, keras_path: Path,
                 fused: list[str]) -> dict:
    p = ptq.accuracy
    summary = (f"post-training int8 {100 * p.top1:.2f}% (drop {p.drop_points:+.2f} pt) -> QAT int8 "
               f"{100 * accuracy.top1:.2f}% (drop {accuracy.drop_points:+.2f} pt; fine-tuned float {100 * tuned_float:.2f}%); "
               f"{len(history)} epoch(s) on "
               f"{n_train} samples in {seconds:.0f} s")
    return {
        "summary": summary,
        "float_model_out": str(keras_path),
        "epochs": len(history), "train_samples": n_train, "learning_rate": options.train.learning_rate,
        "batch_size": options.train.batch_size, "seed": options.train.seed, "finetune_s": round(seconds, 2),
        "history": [h.to_dict() for h in history],
        "simulated_top1_before": round(start_top1, 6),
        "finetuned_float_top1": round(tuned_float, 6),
        "ptq_int8": {"top1": p.top1, "drop_points": p.drop_points, "size_bytes": ptq.size_bytes,
                     "fully_integer": ptq.model.fully_integer, "calib_samples": ptq.calib_samples,
                     "preparation": (ptq.extra.get("ptq") or {}).get("summary")},
        "gain_vs_ptq_points": round(100 * (accuracy.top1 - p.top1), 4),
        "fused_layers": len(fused),
    }


__all__ = ["QATOptions", "TrainConfig", "EpochStats", "finetune"]
