"""Post-training INT8 that keeps its accuracy: prepare the float graph, measure each step, keep what helps.

The steps (``step.py``: one interface; ``order.py``: the ordered list) fit on 3/4 of the calibration samples; each
variant they propose is converted to full INT8 with the same settings, run in LiteRT on the held-back
quarter and compared with the *original* float model's outputs (SQNR of the outputs, top-1 agreement).
A step is kept only when it raises that held-back SQNR by more than ``MIN_GAIN_DB`` without losing
agreement beyond noise (``_judge``), so no step is kept for fitting the samples it is scored on. The report lists every step with
what it gained there, kept or not, and its time.
"""
from __future__ import annotations

import math
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
    # per sample: does the INT8 top-1 equal the float top-1 (for the paired comparison in ``_judge``)
    hits: tuple[bool, ...] = field(repr=False)

    @property
    def agreement(self) -> float:
        return round(sum(self.hits) / max(len(self.hits), 1), 4)

    def to_dict(self) -> dict:
        return {"sqnr_db": self.sqnr_db, "agreement": self.agreement}


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
    label: str = ""  # the variant kept or tried best, when the step tries several (e.g. an alpha)


@dataclass
class PtqPlan:
    """What post-training preparation did to one model."""

    choice: PtqChoice
    baseline: Score | None = None
    final: Score | None = None
    steps: list[PtqStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # the calibrated float model the flatbuffer steps ended with (its ``quantize()`` is the INT8 model they
    # kept): what ``--mode mixed`` searches from, so kept layers keep the fitted weights, biases and ranges
    calibrated: object | None = field(default=None, repr=False, compare=False)

    @property
    def applied(self) -> list[str]:
        return [s.name for s in self.steps if s.applied]

    @property
    def summary(self) -> str:
        if self.choice is PtqChoice.PLAIN:
            return "plain (TFLiteConverter calibration only, --ptq plain)"
        parts = [f"{s.name} {'kept' if s.applied else 'skipped' if s.score else 'n/a'}"
                 + (f" ({s.label})" if s.applied and s.label else "")  # which variant, when it tried several
                 + (f" {s.gain_db:+.1f} dB" if s.gain_db is not None else "")
                 + (" held-back" if s.judged_on != "calibration" and s.gain_db is not None else "")
                 + (f" {s.seconds:.0f}s" if s.seconds is not None else "") for s in self.steps]
        head = (f"calib SQNR {self.baseline.sqnr_db:.1f} -> {self.final.sqnr_db:.1f} dB, agreement "
                f"{100 * self.baseline.agreement:.1f} -> {100 * self.final.agreement:.1f}%"
                if self.baseline and self.final else "not measured")
        return f"{head}; " + ", ".join(parts) + ("; " + "; ".join(self.notes) if self.notes else "")

    def to_dict(self) -> dict:
        return {"choice": self.choice.value, "applied": self.applied, "summary": self.summary,
                "baseline": self.baseline.to_dict() if self.baseline else None,
                "final": self.final.to_dict() if self.final else None,
                "steps": [{**asdict(s), "score": s.score.to_dict() if s.score else None} for s in self.steps],
                "notes": self.notes}


def _judge(score: Score, best: Score) -> tuple[float, bool]:
    """(SQNR gained over the best so far, whether to keep it): more than MIN_GAIN_DB without losing agreement
    beyond noise.

    Agreement is compared sample by sample (a sign test): of the samples whose top-1 changed, ``lost`` now
    disagree with float and ``won`` now agree. A net loss up to one standard deviation of that count under
    "no real change", sqrt(lost + won), is noise; on a held-back quarter of 12 samples a flat 0.5% rule
    rejected a +2.6 dB step for one flipped sample."""
    gain = round(score.sqnr_db - best.sqnr_db, 3)
    lost = sum(b and not s for s, b in zip(score.hits, best.hits))
    won = sum(s and not b for s, b in zip(score.hits, best.hits))
    return gain, gain > MIN_GAIN_DB and lost - won <= max(math.sqrt(lost + won), 0.005 * len(score.hits))


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
        hits = metrics.top1_hits(self.reference[0], outs[0])
        return Score(sqnr_db=round(float(metrics.sqnr_db(r, o)), 3), hits=tuple(bool(h) for h in hits))

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
    """Full-INT8 (or 16x8) conversion of ``fm`` with the preparation steps that measurably help; returns
    (tflite, plan).

    Every step (``order.steps``) fits on 3/4 of the calibration samples and is kept only when it beats the
    model so far on the held-back quarter. ``PtqChoice.LEARNED`` adds the end-to-end range search (the slow step);
    ``PtqChoice.BLOCKS`` has block reconstruction compete with layer-by-layer rounding."""
    from edgeq.quantize.prepare.order import steps
    from edgeq.quantize.prepare.step import Backend

    progress = progress or Silent()
    plan = PtqPlan(choice)
    m = _Measure(settings, calib, fm.predict(calib.inputs), fm.source, progress, fm.batch)
    if settings.mode.spec.op_set == "int16x8":
        if choice is PtqChoice.BLOCKS:
            plan.notes.append("block reconstruction simulates int8 activations: 16x8 fits its weights layer by layer")
        return _prepare_16x8(fm, settings, m, plan, progress)
    with progress.task("PTQ: plain conversion (baseline)"):
        plain = m.convert_float_model(fm)
    run = _start(plan, m, plain, progress)
    ordered = steps(settings.per_channel, choice is PtqChoice.LEARNED, blocks=choice is PtqChoice.BLOCKS)
    keras_model = _flat_keras_model(fm, calib, plan)
    if keras_model is not None:
        for step in (s for s in ordered if s.backend is Backend.KERAS):
            keras_model = run.step(step, keras_model, m.convert_keras)
    prepared = keras_model if any(s.applied for s in plan.steps) else None
    cal = _calibrate(fm, prepared, m, settings, plan, progress)
    if cal is not None:
        for step in (s for s in ordered if s.backend is Backend.CALIBRATED):
            cal = run.step(step, cal, lambda c: c.quantize())
        plan.calibrated = cal
    return run.finish(m)


def prepare_int8(fm, calib, per_channel: bool, io, choice: PtqChoice,
                 progress: Progress | None = None) -> tuple[bytes, PtqPlan]:
    """Full INT8 as ``--mode int8`` prepares it: what per-layer work (``--mode mixed``'s search, ``analyze
    --ptq``'s ranking) tries first and starts from (``PtqPlan.calibrated``)."""
    from edgeq.modes import Mode
    from edgeq.quantize.converter import ConverterSettings

    settings = ConverterSettings(mode=Mode.INT8, io=io, per_channel=per_channel)
    return prepare_and_quantize(fm, settings, calib, progress, choice)


def _prepare_16x8(fm, settings, m: _Measure, plan: PtqPlan, progress: Progress) -> tuple[bytes, PtqPlan]:
    """16x8: only the weights' rounding and biases are fitted (on the int16 activations). int16 activations
    lose next to nothing, so the activation steps have nothing to fix; the int8 weights, rounded to nearest
    by TensorFlow's 16x8 quantizer, are what the mode loses (docs/zoo.md)."""
    from edgeq.convert import representative_data
    from edgeq.quantize.int16x8 import calibrate_16x8, quantize_calibrated_16x8
    from edgeq.quantize.prepare.sequential_rounding import SequentialRoundingStep

    cal = _calibrate(fm, None, m, settings, plan, progress)
    try:  # the int8 calibration's model carries the float graph; TensorFlow's 16x8 calibrator records its own
        cal = cal and cal.with_content(calibrate_16x8(cal.content, representative_data(m.calib, Silent())))
    except Exception as exc:  # noqa: BLE001 - optional steps: convert as without them
        plan.notes.append(f"flatbuffer steps skipped: 16x8 calibration failed: {first_line(exc)[:120]}")
        cal = None
    if cal is None:
        with progress.task("PTQ: plain conversion (baseline)"):
            run = _start(plan, m, m.convert_float_model(fm), progress)
        return run.finish(m)

    def to_16x8(c) -> bytes:  # with the ranges calibrated once: edits change weights, not activation grids
        return quantize_calibrated_16x8(c.content, not settings.per_channel)

    with progress.task("PTQ: plain conversion (baseline)"):
        run = _start(plan, m, to_16x8(cal), progress)
    run.step(SequentialRoundingStep(to_16x8, float_stand_in=True), cal, to_16x8)
    return run.finish(m)


def _start(plan: PtqPlan, m: _Measure, plain: bytes, progress: Progress) -> "_Run":
    """Score the plain model and hold back a quarter of the calibration samples for judging the steps."""
    plan.baseline = m.score(plain)
    split = m.split()
    if split is None:
        plan.notes.append("fewer than 8 calibration samples: steps are judged on the samples they fitted")
        return _Run(plan, m.calib.inputs, m, "calibration", plain, progress)
    fit, judge = split
    return _Run(plan, fit, judge, "held-back", plain, progress)


def _flat_keras_model(fm, calib, plan: PtqPlan):
    """The source's Keras model flattened (nested bases inlined) with BatchNorm folded, for the Keras graph
    steps; None (and a note) when the source has none or it cannot be flattened."""
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.flatten import FlattenError, flatten

    keras_model = fm.extra.get("keras_model")
    if keras_model is None or len(calib.inputs) != 1:
        plan.notes.append(f"{fm.kind} source: the Keras graph steps (equalize, bias_absorb, bias_correction) need a "
                          "single-input Keras model; the flatbuffer steps ran")
        return None
    try:
        # flat: the steps must see inside nested bases (Model(inputs, head(base(inputs))), Sequential([base]))
        model, n_bn = fold_batchnorm(flatten(keras_model).model)
    except (ValueError, TypeError, KeyError, FlattenError) as exc:  # e.g. subclassed models have no functional config
        plan.notes.append(f"graph steps skipped: {exc}")
        return None
    plan.notes.insert(0, f"BN folded into {n_bn} layers before equalization")
    return model


def _calibrate(fm, prepared, m: _Measure, settings, plan: PtqPlan, progress: Progress):
    """The calibrated float model the flatbuffer steps edit (of the kept Keras graph, or of the source)."""
    from contextlib import nullcontext

    from edgeq.convert import representative_data
    from edgeq.quantize.selective import Calibrated
    from edgeq.sources.keras import from_keras_object

    with progress.task("PTQ: calibrating"):
        ctx = from_keras_object(prepared, fm.source, fm.batch) if prepared is not None else nullcontext(fm)
        try:
            with ctx as src:
                return Calibrated.from_float_model(src, representative_data(m.calib, Silent()),
                                                   settings.per_channel, settings.io, str(fm.source))
        except Exception as exc:  # noqa: BLE001 - optional steps: keep the best model so far
            plan.notes.append(f"flatbuffer steps skipped: calibration failed: {first_line(exc)[:120]}")
            return None


class _Run:
    """Runs steps one after another, keeping the best model so far and its score on the judging samples."""

    def __init__(self, plan: PtqPlan, fit: dict[str, np.ndarray], judge: _Measure, judged_on: str, start: bytes,
                 progress: Progress):
        self.plan, self.fit, self.judge, self.judged_on, self.progress = plan, fit, judge, judged_on, progress
        self.start = start
        self.best_bytes, self.best = start, judge.score(start)

    def finish(self, m: _Measure) -> tuple[bytes, PtqPlan]:
        """(the best model, the plan with its score on every calibration sample)."""
        self.plan.final = m.score(self.best_bytes) if self.best_bytes is not self.start else self.plan.baseline
        return self.best_bytes, self.plan

    def step(self, step, model, quantize):
        """Run one step on ``model``; returns the model later steps start from (the step's best variant
        when it was kept, else ``model``)."""
        t0 = time.monotonic()
        if step.needs_held_back and self.judged_on != "held-back":
            self._record(step.name, "not applicable: fewer than 8 calibration samples to hold some back", t0)
            return model
        with self.progress.task(f"PTQ: {step.name}"):
            try:
                candidates = step.candidates(model, self.fit)
                if not candidates:
                    self._record(step.name, "nothing to do", t0)
                    return model
                trials = [(c, c.content if c.content is not None else quantize(c.model)) for c in candidates]
                trials = [t for t in trials if _same_io(t[1], self.best_bytes)]
                if not trials:  # the calibrated-model quantizer could not give the requested I/O (e.g. uint8)
                    self._record(step.name, "not applicable with this I/O type", t0)
                    return model
                scored = [(c, content, self.judge.score(content)) for c, content in trials]
            except Exception as exc:  # noqa: BLE001 - an optional step must never break a conversion
                self._record(step.name, f"not applicable: {first_line(exc)[:120]}", t0)
                return model
        chosen, content, score = max(scored, key=lambda t: t[2].sqnr_db)
        gain, keep = _judge(score, self.best)
        tried = f" (tried {', '.join(f'{c.label} {sc.sqnr_db:.1f} dB' for c, _, sc in scored)})" \
            if len(scored) > 1 else ""
        self.plan.steps.append(PtqStep(step.name, chosen.detail + tried, keep, score, gain, _since(t0),
                                       self.judged_on, chosen.label))
        if not keep:
            return model
        self.best_bytes, self.best = content, score
        return chosen.model

    def _record(self, name: str, detail: str, t0: float) -> None:
        self.plan.steps.append(PtqStep(name, detail, False, seconds=_since(t0)))


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 2)


def _same_io(content: bytes, reference: bytes) -> bool:
    """Same input/output dtypes as the converter's own model (the quantizer may ignore e.g. uint8 I/O)."""
    from edgeq.modelinfo import inspect_tflite

    a, b = inspect_tflite(content=content), inspect_tflite(content=reference)
    return ([t.dtype for t in a.inputs + a.outputs] == [t.dtype for t in b.inputs + b.outputs]
            and len(a.float_ops) <= len(b.float_ops))
