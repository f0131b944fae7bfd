"""Post-training INT8 that keeps its accuracy: prepare the float graph, measure each step, keep what helps.

Every step is measured the same way: convert to full INT8 with the same TFLiteConverter settings, run
the result in LiteRT on the calibration data and compare with the *original* float model's outputs
(SQNR of the outputs, top-1 agreement). A step is kept only when it raises SQNR by more than
``MIN_GAIN_DB``; the report lists every step with what it gained, kept or not, and its time.

Steps that fit many parameters to the data (learned rounding) are fitted on 3/4 of the calibration
samples and judged on the held-back quarter, so they cannot be kept for fitting the data they are scored on.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from edgeq import metrics
from edgeq.errors import first_line
from edgeq.modes import PtqChoice
from edgeq.progress import Progress, Silent

MIN_GAIN_DB = 0.1


@dataclass(frozen=True)
class Score:
    """How closely an INT8 model follows the float model on the calibration data."""

    sqnr_db: float
    agreement: float


@dataclass(frozen=True)
class PtqStep:
    """One preparation step: what it did, what it scored, and whether it was kept."""

    name: str
    detail: str
    applied: bool
    score: Score | None = None
    gain_db: float | None = None  # SQNR gained over the best model before this step
    seconds: float | None = None  # time the step took (fitting, converting, scoring)
    judged_on: str = "calibration"  # "calibration" or "held-back" (samples the step did not fit on)


@dataclass
class PtqPlan:
    """What post-training preparation did to one model."""

    choice: PtqChoice
    baseline: Score | None = None
    final: Score | None = None
    steps: list[PtqStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def applied(self) -> list[str]:
        return [s.name for s in self.steps if s.applied]

    @property
    def summary(self) -> str:
        if self.choice is PtqChoice.PLAIN:
            return "plain (TFLiteConverter calibration only, --ptq plain)"
        parts = [f"{s.name} {'kept' if s.applied else 'skipped' if s.score else 'n/a'}"
                 + (f" {s.gain_db:+.1f} dB" if s.gain_db is not None else "")
                 + (" held-back" if s.judged_on != "calibration" and s.gain_db is not None else "")
                 + (f" {s.seconds:.0f}s" if s.seconds is not None else "") for s in self.steps]
        head = (f"calib SQNR {self.baseline.sqnr_db:.1f} -> {self.final.sqnr_db:.1f} dB, agreement "
                f"{100 * self.baseline.agreement:.1f} -> {100 * self.final.agreement:.1f}%"
                if self.baseline and self.final else "not measured")
        return f"{head}; " + ", ".join(parts) + ("; " + "; ".join(self.notes) if self.notes else "")

    def to_dict(self) -> dict:
        return {"choice": self.choice.value, "applied": self.applied, "summary": self.summary,
                "baseline": asdict(self.baseline) if self.baseline else None,
                "final": asdict(self.final) if self.final else None,
                "steps": [asdict(s) for s in self.steps], "notes": self.notes}


def _judge(score: Score, best: Score) -> tuple[float, bool]:
    """(SQNR gained over the best so far, whether to keep it): more than MIN_GAIN_DB without losing agreement."""
    gain = round(score.sqnr_db - best.sqnr_db, 3)
    return gain, gain > MIN_GAIN_DB and score.agreement >= best.agreement - 0.005


class _Measure:
    """Convert a float model to INT8 and score it on the calibration data against the original float outputs."""

    def __init__(self, settings, calib, reference: list[np.ndarray], source, progress: Progress,
                 batch: int | None = 1):
        self.settings, self.calib, self.reference, self.source, self.progress = (
            settings, calib, reference, source, progress)
        self.batch = batch  # prepared graphs are exported with the source's (static or dynamic) batch

    def score(self, content: bytes) -> Score:
        from edgeq.runtime import TFLiteRunner

        outs = TFLiteRunner(content=content).run(self.calib.inputs)
        r = np.concatenate([np.asarray(o, np.float64).reshape(len(o), -1) for o in self.reference], 1)
        o = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in outs], 1)
        return Score(sqnr_db=round(float(metrics.sqnr_db(r, o)), 3),
                     agreement=round(float(metrics.agreement(self.reference[0], outs[0])), 4))

    def split(self) -> tuple[dict[str, np.ndarray], "_Measure"] | None:
        """(fit inputs, a measure on the held-back samples): every 4th sample is held back (deterministic).
        None when there are too few samples to hold any back."""
        n = len(next(iter(self.calib.inputs.values())))
        if n < 8:
            return None
        held = np.arange(n) % 4 == 3
        fit = {k: v[~held] for k, v in self.calib.inputs.items()}
        calib = replace(self.calib, inputs={k: v[held] for k, v in self.calib.inputs.items()},
                        labels=None if self.calib.labels is None else self.calib.labels[held])
        return fit, _Measure(self.settings, calib, [r[held] for r in self.reference], self.source, self.progress,
                             self.batch)

    def convert_saved_model(self, saved_model_dir) -> bytes:
        from edgeq.convert import representative_data
        from edgeq.quantize.converter import make_converter, run_converter

        rep = representative_data(self.calib, Silent())
        return run_converter(make_converter(saved_model_dir, self.settings, rep), self.settings, str(self.source))

    def convert_float_model(self, fm) -> bytes:
        """The plain full-INT8 model of any FloatModel (its SavedModel, or its float flatbuffer)."""
        if fm.float_tflite is None:
            return self.convert_saved_model(fm.saved_model_dir)
        from edgeq.convert import representative_data
        from edgeq.quantize.converter import quantize_flatbuffer_source

        return quantize_flatbuffer_source(fm.float_tflite, self.settings, representative_data(self.calib, Silent()),
                                          str(self.source))

    def convert_keras(self, model) -> bytes:
        from edgeq.sources.keras import from_keras_object

        with from_keras_object(model, self.source, self.batch) as fm:
            return self.convert_saved_model(fm.saved_model_dir)


def prepare_and_quantize(fm, settings, calib, progress: Progress | None = None,
                         choice: PtqChoice = PtqChoice.AUTO) -> tuple[bytes, PtqPlan]:
    """Full-INT8 conversion of ``fm`` with the preparation steps that measurably help; returns (tflite, plan).

    ``PtqChoice.LEARNED`` adds learned weight rounding at the end (the slow step)."""
    from edgeq.quantize.prepare.bias_absorb import absorb_biases
    from edgeq.quantize.prepare.bias_correction import correct_biases
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.equalize import equalize
    from edgeq.quantize.prepare.flatten import FlattenError, flatten
    from edgeq.quantize.prepare.graph import clone

    progress = progress or Silent()
    plan = PtqPlan(choice)
    reference = fm.predict(calib.inputs)
    m = _Measure(settings, calib, reference, fm.source, progress, fm.batch)
    with progress.task("PTQ: plain conversion (baseline)"):
        best_bytes = m.convert_float_model(fm)
        best = plan.baseline = m.score(best_bytes)
    keras_model = fm.extra.get("keras_model")
    graph_ok = keras_model is not None and len(calib.inputs) == 1
    if not graph_ok:
        plan.notes.append(f"{fm.kind} source: the Keras graph steps (equalize, bias_absorb, bias_correction) need a "
                          "single-input Keras model; the flatbuffer steps ran")
    current = None
    if graph_ok:
        x = next(iter(calib.inputs.values()))
        try:
            # flat: the steps must see inside nested bases (Model(inputs, head(base(inputs))), Sequential([base]))
            current, n_bn = fold_batchnorm(flatten(keras_model).model)
        except (ValueError, TypeError, KeyError, FlattenError) as exc:  # e.g. subclassed models have no functional config
            plan.notes.append(f"graph steps skipped: {exc}")
            current = None
    if current is not None:
        candidates = [
            ("equalize", lambda mdl: equalize(mdl, x), "cross-layer equalization of {n} layer pairs"),
            ("bias_absorb", lambda mdl: absorb_biases(mdl, x), "bias absorption into {n} following layers"),
            ("bias_correction", lambda mdl: correct_biases(mdl, x, settings.per_channel),
             "empirical bias correction of {n} layers"),
        ]
        accepted = current
        for name, step, text in candidates:
            t0 = time.monotonic()
            with progress.task(f"PTQ: {name}"):
                try:
                    trial, n = step(clone(accepted))
                    if n == 0:
                        plan.steps.append(PtqStep(name, "nothing to do", False))
                        continue
                    content = m.convert_keras(trial)
                    score = m.score(content)
                except Exception as exc:  # noqa: BLE001 - an optional step must never break a conversion
                    # a layer this step does not understand: skip the step, never the conversion
                    plan.steps.append(PtqStep(name, f"not applicable: {first_line(exc)[:120]}", False))
                    continue
            gain, keep = _judge(score, best)
            plan.steps.append(PtqStep(name, text.format(n=n), keep, score, gain, _since(t0)))
            if keep:
                accepted, best, best_bytes = trial, score, content
        plan.notes.insert(0, f"BN folded into {n_bn} layers before equalization")
        prepared = accepted if any(s.applied for s in plan.steps) else None
    else:
        prepared = None
    best_bytes, best, cal = _tune_ranges(fm, prepared, m, settings, plan, best_bytes, best, progress)
    if choice is PtqChoice.LEARNED and cal is not None:
        with progress.task("PTQ: adaround (learned weight rounding)"):
            best_bytes, best = _adaround(cal, m, plan, best_bytes, best)
    plan.final = best
    return best_bytes, plan


def _tune_ranges(fm, prepared, m: _Measure, settings, plan: PtqPlan, best_bytes: bytes, best: Score,
                 progress: Progress):
    """On the calibrated float model: fold per-channel MUL/ADD into weights, equalize channels between
    layers, then clip activation ranges (percentile or MSE); each kept only if it helps.

    Returns (best bytes, best score, the calibrated model they were quantized from, or None)."""
    from contextlib import nullcontext

    from edgeq.convert import representative_data
    from edgeq.quantize.prepare.ranges import clipped_models
    from edgeq.quantize.selective import Calibrated
    from edgeq.sources.keras import from_keras_object

    with progress.task("PTQ: calibrating"):
        ctx = from_keras_object(prepared, fm.source, fm.batch) if prepared is not None else nullcontext(fm)
        try:
            with ctx as src:
                cal = Calibrated.from_float_model(src, representative_data(m.calib, Silent()),
                                                  settings.per_channel, settings.io, str(fm.source))
        except Exception as exc:  # noqa: BLE001 - optional step: keep the best model so far
            plan.steps.append(PtqStep("ranges", f"not applicable: {first_line(exc)[:120]}", False))
            return best_bytes, best, None
    t0 = time.monotonic()
    with progress.task("PTQ: fold_affine"):
        n_steps = len(plan.steps)
        cal, best_bytes, best = _fold_affine(cal, m, plan, best_bytes, best)
        _stamp(plan, n_steps, t0)
    t0 = time.monotonic()
    with progress.task("PTQ: equalize_calibrated"):
        n_steps = len(plan.steps)
        cal, best_bytes, best = _equalize_calibrated(cal, m, plan, best_bytes, best)
        _stamp(plan, n_steps, t0)
    t0 = time.monotonic()
    with progress.task("PTQ: activation ranges"):
        try:
            trials = [(method, edited, content, m.score(content))
                      for method, edited, content in clipped_models(cal, m.calib.inputs)]
        except Exception as exc:  # noqa: BLE001 - optional step: keep the best model so far
            plan.steps.append(PtqStep("ranges", f"not applicable: {first_line(exc)[:120]}", False))
            return best_bytes, best, cal
    trials = [t for t in trials if _same_io(t[2], best_bytes)]
    if not trials:  # the calibrated-model quantizer could not give the requested I/O type (e.g. uint8)
        plan.steps.append(PtqStep("ranges", f"not applicable with {settings.io.value} I/O", False))
        return best_bytes, best, cal
    method, edited, content, score = max(trials, key=lambda t: t[3].sqnr_db)
    gain, keep = _judge(score, best)
    tried = ", ".join(f"{t[0].value} {t[3].sqnr_db:.1f} dB" for t in trials)
    plan.steps.append(PtqStep("ranges", f"{method.value} clipping of activation ranges (tried {tried})", keep,
                              score, gain, _since(t0)))
    # cal (calibrated from the kept graph, with the kept flatbuffer steps) quantizes to the best model so far
    return (content, score, edited) if keep else (best_bytes, best, cal)


def _adaround(cal, m: _Measure, plan: PtqPlan, best_bytes: bytes, best: Score) -> tuple[bytes, Score]:
    """Learned weight rounding of ``cal``: fitted on 3/4 of the calibration samples, kept only when it beats
    the best model so far on the held-back quarter."""
    from edgeq.quantize.prepare.adaround import adaround

    t0 = time.monotonic()
    split = m.split()
    if split is None:
        plan.steps.append(PtqStep("adaround", "not applicable: fewer than 8 calibration samples", False))
        return best_bytes, best
    fit, held = split
    try:
        start = cal.quantize()
        content, learned = adaround(cal.content, start, fit)
        if not learned:
            plan.steps.append(PtqStep("adaround", "nothing to do", False, seconds=_since(t0)))
            return best_bytes, best
        quantized = type(cal)(content, cal.per_channel, cal.io, cal.source).quantize()
        score, before = held.score(quantized), held.score(best_bytes)
    except Exception as exc:  # noqa: BLE001 - an optional step must never break a conversion
        plan.steps.append(PtqStep("adaround", f"not applicable: {first_line(exc)[:120]}", False,
                                  seconds=_since(t0)))
        return best_bytes, best
    if not _same_io(quantized, best_bytes):
        plan.steps.append(PtqStep("adaround", f"not applicable with {cal.io.value} I/O", False))
        return best_bytes, best
    gain, keep = _judge(score, before)
    n_fit = len(next(iter(fit.values())))
    plan.steps.append(PtqStep("adaround", f"learned rounding of {len(learned)} layers, fitted on {n_fit} samples, "
                              f"held-back SQNR {before.sqnr_db:.1f} -> {score.sqnr_db:.1f} dB, agreement "
                              f"{100 * before.agreement:.1f} -> {100 * score.agreement:.1f}%", keep, score, gain,
                              _since(t0), "held-back"))
    return (quantized, m.score(quantized)) if keep else (best_bytes, best)


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def _stamp(plan: PtqPlan, n_before: int, t0: float) -> None:
    """Give the step(s) appended since ``n_before`` their time."""
    for k in range(n_before, len(plan.steps)):
        plan.steps[k] = replace(plan.steps[k], seconds=_since(t0))


def _fold_affine(cal, m: _Measure, plan: PtqPlan, best_bytes: bytes, best: Score):
    """Fold constant per-channel MUL/ADD (e.g. a BatchNorm after ReLU) into the conv/dense before them.

    Returns the calibrated model to tune ranges on, and the best (bytes, score) so far."""
    from edgeq.quantize.prepare.fold_affine import fold_affine

    try:
        content, n = fold_affine(cal.content)
        if n == 0:
            plan.steps.append(PtqStep("fold_affine", "nothing to do", False))
            return cal, best_bytes, best
        folded = type(cal)(content, cal.per_channel, cal.io, cal.source)
        quantized = folded.quantize()
        score = m.score(quantized)
    except Exception as exc:  # noqa: BLE001 - an optional step must never break a conversion
        plan.steps.append(PtqStep("fold_affine", f"not applicable: {first_line(exc)[:120]}", False))
        return cal, best_bytes, best
    if not _same_io(quantized, best_bytes):
        plan.steps.append(PtqStep("fold_affine", f"not applicable with {cal.io.value} I/O", False))
        return cal, best_bytes, best
    gain, keep = _judge(score, best)
    plan.steps.append(PtqStep("fold_affine", f"{n} per-channel MUL/ADD folded into conv/dense weights", keep,
                              score, gain))
    return (folded, quantized, score) if keep else (cal, best_bytes, best)


def _equalize_calibrated(cal, m: _Measure, plan: PtqPlan, best_bytes: bytes, best: Score):
    """Activation-aware channel equalization in the calibrated model, trying a few migration strengths.

    Returns the calibrated model to tune ranges on, and the best (bytes, score) so far."""
    from edgeq.quantize.prepare import equalize_calibrated as eqc

    try:
        chains, stats = eqc.prepare(cal.content, m.calib.inputs)
        if not chains:
            plan.steps.append(PtqStep("equalize_calibrated", "nothing to do", False))
            return cal, best_bytes, best
        trials = []
        for alpha in eqc.ALPHAS:
            content, n = eqc.equalize_calibrated(cal.content, m.calib.inputs, alpha, (chains, stats))
            trial = type(cal)(content, cal.per_channel, cal.io, cal.source)
            quantized = trial.quantize()
            trials.append((alpha, trial, quantized, m.score(quantized)))
    except Exception as exc:  # noqa: BLE001 - an optional step must never break a conversion
        plan.steps.append(PtqStep("equalize_calibrated", f"not applicable: {first_line(exc)[:120]}", False))
        return cal, best_bytes, best
    trials = [t for t in trials if _same_io(t[2], best_bytes)]
    if not trials:
        plan.steps.append(PtqStep("equalize_calibrated", f"not applicable with {cal.io.value} I/O", False))
        return cal, best_bytes, best
    alpha, trial, quantized, score = max(trials, key=lambda t: t[3].sqnr_db)
    gain, keep = _judge(score, best)
    tried = ", ".join(f"{t[0]:g} {t[3].sqnr_db:.1f} dB" for t in trials)
    plan.steps.append(PtqStep("equalize_calibrated", f"{len(chains)} layer pairs equalized, alpha {alpha:g} "
                              f"(tried {tried})", keep, score, gain))
    return (trial, quantized, score) if keep else (cal, best_bytes, best)


def _same_io(content: bytes, reference: bytes) -> bool:
    """Same input/output dtypes as the converter's own model (the quantizer may ignore e.g. uint8 I/O)."""
    from edgeq.modelinfo import inspect_tflite

    a, b = inspect_tflite(content=content), inspect_tflite(content=reference)
    return ([t.dtype for t in a.inputs + a.outputs] == [t.dtype for t in b.inputs + b.outputs]
            and len(a.float_ops) <= len(b.float_ops))
