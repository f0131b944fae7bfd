"""``edgeq qat finetune``: measure post-training INT8, fine-tune with simulated INT8, export, report.

One run answers the user's question "did QAT pay off?": the report carries the float model's top-1, the
post-training full-INT8 model's (made by ``edgeq.convert`` exactly as ``edgeq convert`` would) and the
QAT model's, all on ``--val``, plus the cost of fine-tuning.
"""
from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
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
from edgeq.qat.train import (EpochStats, TrainConfig, calibrate, exported_agreement, seed_everything,
                              simulated_top1, train)
from edgeq.report import ConversionReport
from edgeq.sources import load_float_model, source_kind


@dataclass(frozen=True)
class QATOptions:
    """Everything that decides what ``finetune`` produces."""

    train: TrainConfig = TrainConfig()
    io: IOType = IOType.INT8  # full-INT8 models take and give int8, as with edgeq convert --mode int8
    ptq_calib_samples: int = 300  # training samples for the post-training INT8 baseline
    # ship the post-training INT8 model when the QAT export does not beat it on the validation data (the
    # data that chose the epoch; never the held-apart eval data)
    keep_better: bool = True


def _ptq_baseline(source: Path, train_x: np.ndarray, val, options: QATOptions, work: Path,
                  progress: Progress) -> ConversionReport:
    """Post-training full-INT8 through ``edgeq.convert`` (calibrated on training samples), evaluated on val."""
    calib = work / "calib.npz"
    np.savez(calib, x=train_x)
    return convert(source, ConvertOptions(mode=Mode.INT8, io=options.io, calib=calib), out=work / "ptq.tflite",
                   eval_data=val, progress=progress)


def finetune(model: Path | str, train_data: Path | str, val_data: Path | str, out_dir: Path | str,
             options: QATOptions | None = None, progress: Progress | None = None,
             on_epoch: Callable[[EpochStats], None] | None = None,
             eval_data: Path | str | None = None) -> ConversionReport:
    """Fine-tune ``model`` (.keras/.h5) with simulated INT8 and write ``<out_dir>/<stem>_qat_int8.tflite``
    (full integer) and ``<out_dir>/<stem>_qat.keras`` (the fine-tuned float model).

    ``train_data``/``val_data`` are .npz files (or image folders) with inputs ``x`` and, optionally, integer
    labels ``y``, or in-memory data (an ``(x, y)`` tuple, a dict, an iterable or ``tf.data.Dataset``). Without
    labels in ``train_data`` the float model teaches (distillation); without labels in ``val_data`` the report
    judges agreement with the float model only. Nested Keras models are accepted.

    ``eval_data`` (same forms as ``val_data``), when given, is the data the report's numbers (float, PTQ INT8,
    QAT INT8) are measured on, and ``val_data`` only chooses the epoch (early stopping): a held-apart set that
    no decision has seen. Without it, ``val_data`` does both (then the reported QAT number is optimistic: the
    epoch was picked on the same images).
    """
    options = options or QATOptions()
    progress = progress or Silent()
    source, out_dir = Path(model), Path(out_dir)
    kind = source_kind(source)
    export.check_out_dir(out_dir, source, inputs=(train_data, val_data, eval_data))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="edgeq-qat-") as tmp:
        with progress.task(f"loading {source.name}"):  # owned at once: a signal must not leak its export
            fm = stack.enter_context(load_float_model(source))
        keras_model = fm.extra.get("keras_model")
        if keras_model is None:
            raise ModelLoadError(f"{source}: QAT rewrites Keras layers, and a {kind} graph has none; give the "
                                 ".keras or .h5 file the model was trained as")
        train_ds = load_dataset(train_data, fm.inputs, name="train_data")
        val_ds = load_dataset(val_data, fm.inputs, name="val_data")
        eval_ds = load_dataset(eval_data, fm.inputs, name="eval_data") if eval_data is not None else val_ds
        reference = fm.predict(eval_ds.inputs)
        from edgeq.qat.rewrite import rewrite
        from edgeq.qat.start import prepared_start
        from edgeq.qat.train import agreement_with_float, check_labels, distill_weight

        seed_everything(options.train.seed)  # before the rewrite: new Dropout layers draw their seeds there
        qat = rewrite(keras_model)  # an unsupported layer fails here, in seconds, before any conversion
        check_labels(qat, train_ds)
        check_labels(qat, val_ds)
        if eval_ds is not val_ds:
            check_labels(qat, eval_ds)
        distill_weight(options.train, train_ds)  # labels asked for but missing: fail before minutes of work
        timings["load"] = time.perf_counter() - t

        t = time.perf_counter()
        rng = np.random.default_rng(options.train.seed)
        pick = np.sort(rng.choice(len(train_ds), min(options.ptq_calib_samples, len(train_ds)), replace=False))
        # eval as read once (a generator given as val_data cannot be read a second time)
        val_arrays = {**eval_ds.inputs, **({"y": eval_ds.labels} if eval_ds.labels is not None else {})}
        calib_x = next(iter(train_ds.inputs.values()))[pick]
        ptq = _ptq_baseline(source, calib_x, val_arrays, options, Path(tmp), progress)
        timings["ptq_int8"] = time.perf_counter() - t

        t = time.perf_counter()
        val_reference = _keras_outputs(qat, val_ds)  # the input model's outputs, in its own head order
        start_model, replayed = prepared_start(keras_model, (ptq.extra.get("ptq") or {}).get("steps", []),
                                               calib_x)
        if replayed:
            seed_everything(options.train.seed)
            qat = rewrite(start_model)
        calibrate(qat, train_ds, options.train, progress)
        to_int8 = lambda m: export.to_tflite(m, options.io, source)  # noqa: E731 - what ships, judged per epoch
        start = exported_agreement(qat, val_ds, val_reference, to_int8)
        start_top1 = simulated_top1(qat, val_ds)
        history = train(qat, train_ds, val_ds, options.train, progress, on_epoch, val_reference=val_reference,
                        export=to_int8)
        timings["finetune"] = time.perf_counter() - t

        t = time.perf_counter()
        with progress.task("converting the fine-tuned model to full INT8"):
            content = export.to_tflite(qat.model, options.io, source)
            info = export.inspect_export(content, options.io, source)
        timings["export"] = time.perf_counter() - t
        t = time.perf_counter()
        qat_accuracy = evaluate(content, eval_ds, reference, progress)
        ptq_content = Path(ptq.output).read_bytes()
        choice = _choose(content, ptq_content, val_ds, val_reference,
                         distill_weight(options.train, train_ds) < 1.0, keep_better=options.keep_better)
        accuracy = qat_accuracy
        if choice["shipped"] == "ptq":
            content, info, accuracy = ptq_content, ptq.model, ptq.accuracy
        tuned = _keras_outputs(qat, eval_ds, qat.float_model)
        tuned_float = metrics.top1(tuned[0], eval_ds.labels) if eval_ds.labels is not None else None
        timings["eval"] = time.perf_counter() - t

        tfl, keras_path = export.write_outputs(out_dir, source, content, _float_to_save(qat, keras_model, replayed))
        info.path = str(tfl)
    qat_section = _qat_section(options, len(train_ds), history, start_top1, tuned_float, ptq, qat_accuracy,
                               timings["finetune"], keras_path, qat.fused)
    qat_section.update(choice)
    if choice["shipped"] == "ptq":
        qat_section["summary"] += (f"; wrote the post-training INT8 model: QAT did not beat it on the validation "
                                   f"data ({choice['val_qat']} vs {choice['val_ptq']}; --always-qat writes QAT's)")
    qat_section.update(val_samples=len(val_ds), eval_samples=len(eval_ds),
                       eval_is_val=eval_ds is val_ds)
    qat_section.update(start_agreement=start.agreement, start_sqnr_db=round(start.sqnr_db, 3),
                       started_from=["bn folded in the simulation"] + replayed,
                       signal=_signal(options, train_ds), nested_models_inlined=qat.flat.nested if qat.flat else 0,
                       best_epoch=max([h.epoch for h in history if h.best], default=0))
    return ConversionReport(
        source=str(source), source_kind=kind, output=str(tfl), mode=Mode.INT8.value, io=options.io.value,
        per_channel=True, size_bytes=len(content), float_size_bytes=ptq.float_size_bytes, model=info,
        calib_samples=None, accuracy=accuracy,
        notes=list(dict.fromkeys(list(fm.notes) + train_ds.notes + val_ds.notes
                                 + (eval_ds.notes if eval_ds is not val_ds else []))), timings_s=timings,
        extra={"qat": qat_section})


def _choose(qat_tflite: bytes, ptq_tflite: bytes, val_ds, val_reference, by_labels: bool,
            keep_better: bool = True) -> dict:
    """Which INT8 model ships, judged on the validation data by the key early stopping uses (top-1 when
    training on labels, else agreement; then SQNR): QAT's export unless post-training INT8 beats it there
    (and ``keep_better``; both are scored either way, for the report)."""
    from edgeq.qat.train import tflite_agreement

    q = tflite_agreement(qat_tflite, val_ds, val_reference)
    p = tflite_agreement(ptq_tflite, val_ds, val_reference)

    def show(a) -> str:
        first = a.top1 if by_labels and a.top1 is not None else a.agreement
        what = "top-1" if by_labels and a.top1 is not None else "agreement"
        return (f"{what} {100 * first:.2f}%, " if first is not None else "") + f"{a.sqnr_db:.2f} dB"

    return {"shipped": "ptq" if keep_better and p.key(by_labels) > q.key(by_labels) else "qat",
            "val_qat": show(q), "val_ptq": show(p)}


def _keras_outputs(qat, ds, model=None) -> list[np.ndarray]:
    from edgeq.qat.train import _outputs, _single_input

    return _outputs(model if model is not None else qat.float_model, _single_input(qat, ds))


def _float_to_save(qat, keras_model, replayed: list[str]):
    """The fine-tuned float model in the user's own (nested) architecture when the weights map back onto it;
    the flat prepared graph (BN folded, equalized) when QAT started from PTQ's prepared weights."""
    import keras

    from edgeq.quantize.prepare.flatten import copy_back

    if replayed or qat.flat is None or not qat.flat.nested:
        return qat.float_model
    target = keras.models.clone_model(keras_model)
    copy_back(qat.flat, target)
    return target


def _signal(options: QATOptions, train_ds) -> str:
    w = options.train.distill_weight
    if train_ds.labels is None:
        return "distillation from the float model (no labels)"
    if not w:
        return "labels"
    return f"labels {1 - w:.2f} + distillation {w:.2f}"


def _qat_section(options: QATOptions, n_train: int, history: list[EpochStats], start_top1: float | None,
                 tuned_float: float | None, ptq: ConversionReport, accuracy, seconds: float, keras_path: Path,
                 fused: list[str]) -> dict:
    p = ptq.accuracy
    if p.top1 is not None and accuracy.top1 is not None:
        head = (f"post-training int8 {100 * p.top1:.2f}% (drop {p.drop_points:+.2f} pt) -> QAT int8 "
                f"{100 * accuracy.top1:.2f}% (drop {accuracy.drop_points:+.2f} pt; fine-tuned float "
                f"{100 * tuned_float:.2f}%)")
    else:
        head = (f"agreement with float: post-training int8 {100 * p.vs_float.agreement:.2f}% -> QAT int8 "
                f"{100 * accuracy.vs_float.agreement:.2f}%")
    summary = f"{head}; {len(history)} epoch(s) on {n_train} samples in {seconds:.0f} s"
    return {
        "summary": summary,
        "float_model_out": str(keras_path),
        "epochs": len(history), "train_samples": n_train, "learning_rate": options.train.learning_rate,
        "batch_size": options.train.batch_size, "seed": options.train.seed, "finetune_s": round(seconds, 2),
        "history": [h.to_dict() for h in history],
        "simulated_top1_before": round(start_top1, 6) if start_top1 is not None else None,
        "finetuned_float_top1": round(tuned_float, 6) if tuned_float is not None else None,
        "ptq_int8": {"top1": p.top1, "drop_points": p.drop_points, "size_bytes": ptq.size_bytes,
                     "fully_integer": ptq.model.fully_integer, "calib_samples": ptq.calib_samples,
                     "preparation": (ptq.extra.get("ptq") or {}).get("summary")},
        "gain_vs_ptq_points": round(100 * (accuracy.top1 - p.top1), 4) if p.top1 is not None and accuracy.top1
        is not None else None,
        "ptq_agreement": p.vs_float.agreement if p.vs_float else None,
        "qat_agreement": accuracy.vs_float.agreement if accuracy.vs_float else None,
        "qat_top1": accuracy.top1,  # QAT's own model, also when post-training INT8 is the one written
        "fused_layers": len(fused),
    }


__all__ = ["QATOptions", "TrainConfig", "EpochStats", "finetune"]
