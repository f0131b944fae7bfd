"""``--mode mixed``: INT8 everywhere except the few layers the accuracy budget needs in higher precision.

The search follows NNCF's accuracy control, adapted to TFLite and made cheap:
1. calibrate once (the cost of one INT8 conversion), or take the calibrated model edgeq's PTQ steps ended with
   (``--ptq auto``); every later candidate is a sub-second re-quantization of it;
2. verify all-INT8 on the eval data: if it fits the budget, done;
3. rank layers by measured harm (share of the INT8 output error that vanishes when only that layer is
   float, on a subset of the eval data): no hard-coded list of "sensitive" op types;
4. keep the top-k most harmful layers out of INT8 (float, or 16x8 kernels with ``Fallback.INT16``, ranked
   by what that precision recovers), finding the smallest k that fits with a doubling
   then bisecting search, each step verified on the full eval data with the final fallback precision;
5. prune: try returning each kept layer to INT8, biggest first, and keep the ones the budget allows.
Verification uses the same data the budget is checked on (as NNCF does); confirm on a separate test
set with ``edgeq eval`` when the budget matters.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from edgeq.modes import Fallback, Metric
from edgeq.progress import Progress, Silent
from edgeq.quantize.macs import ComputeShare, Precision, compute_share, op_records
from edgeq.quantize.selective import Calibrated
from edgeq.quantize.sensitivity import Scorer, Sensitivity, measure

RANK_SAMPLES = 500  # ranking needs a stable order, not exact numbers (verification uses all the data)
MAX_PRUNE = 8  # pruning tries per plan: each is one verification


@dataclass(frozen=True)
class LayerDecision:
    """One layer kept out of INT8, and why."""

    layer: str
    node: str
    op: str
    macs: int
    precision: Precision
    error_share: float  # share of the all-INT8 output error it removed on its own (its rank key)


@dataclass
class MixedPlan:
    """The outcome of the budgeted search."""

    metric: Metric
    max_drop: float
    met: bool
    loss_int8: float  # points lost by full INT8 on the eval data
    loss: float  # points lost by the chosen model
    fallback: Fallback
    kept: list[LayerDecision]
    layers_total: int
    share: ComputeShare
    size_bytes: int
    search_s: float
    quantizations: int
    evaluations: int
    sensitivity: Sensitivity | None = None
    content: bytes = field(default=b"", repr=False)
    notes: list[str] = field(default_factory=list)
    all_integer: bool | None = None  # no op computes in float (None: not checked)

    @property
    def unit(self) -> str:
        return {Metric.TOP1: "pt top-1", Metric.AGREEMENT: "% disagreement", Metric.COSINE: "pt cosine",
                Metric.SQNR: "% noise"}[self.metric]

    def summary(self) -> str:
        # unmet: the best model found may be full INT8 itself, when no layer set tried did better
        best = f"best found drop {self.loss:+.2f}" if self.kept else "no layer set tried did better than full INT8"
        verdict = (f"budget {self.max_drop:g} {self.unit} met: drop {self.loss:+.2f}" if self.met else
                   f"budget {self.max_drop:g} {self.unit} CANNOT be met: {best}; raise `max_drop` or try "
                   "int16x8/QAT")
        kept = (", ".join(f"{d.layer} ({d.op}, {d.precision.value})" for d in self.kept) if self.kept
                else "none (full INT8 fits)" if self.met else "none")
        return (f"{verdict} (full INT8 {self.loss_int8:+.2f}); kept in higher precision: {len(self.kept)} of "
                f"{self.layers_total} layers: {kept}; INT8 runs {100 * self.share.int8_ops_share:.0f}% of ops "
                f"and {100 * self.share.int8_macs_share:.1f}% of MACs"
                + ("" if self.all_integer is None else "; all-integer" if self.all_integer else "; NOT all-integer")
                + f"; size {self.size_bytes / 1024:.1f} KiB; "
                f"search {self.search_s:.1f} s" + (f" ({self.quantizations} quantizations, {self.evaluations} "
                                                    "evaluations, 1 calibration)" if self.sensitivity else "")
                + "".join(f"; {n}" for n in self.notes))

    def to_dict(self) -> dict:
        return {
            "summary": self.summary(), "metric": self.metric.value, "max_drop": self.max_drop, "met": self.met,
            "drop_int8": round(self.loss_int8, 4), "drop": round(self.loss, 4), "fallback": self.fallback.value,
            "kept": [{**asdict(d), "precision": d.precision.value} for d in self.kept],
            "layers_total": self.layers_total, **self.share.to_dict(), "size_bytes": self.size_bytes,
            "search_s": round(self.search_s, 2), "quantizations": self.quantizations,
            "evaluations": self.evaluations, "notes": self.notes, "all_integer": self.all_integer,
            "sensitivity": self.sensitivity.to_dict() if self.sensitivity else None,
        }


class _Trials:
    """Quantize + verify a set of kept layers once; remember every answer."""

    def __init__(self, cal: Calibrated, scorer: Scorer, fallback: Fallback):
        self.cal, self.scorer, self.fallback = cal, scorer, fallback
        self.cache: dict[frozenset, tuple[float, bytes]] = {}
        self.quantizations = 0

    def __call__(self, nodes: list[str]) -> tuple[float, bytes]:
        key = frozenset(nodes)
        if key not in self.cache:
            content = self.cal.candidate(sorted(key), self.fallback)
            self.quantizations += 1
            self.cache[key] = (self.scorer.loss(self.scorer.outputs(content)), content)
        return self.cache[key]


def search(cal: Calibrated, scorer: Scorer, max_drop: float, fallback: Fallback = Fallback.FP16,
           progress: Progress | None = None, rank_samples: int = RANK_SAMPLES) -> MixedPlan:
    """Find a small set of layers to keep out of INT8 so that the metric loss is at most ``max_drop``."""
    progress = progress or Silent()
    t0 = time.perf_counter()
    trial = _Trials(cal, scorer, fallback)
    layers = cal.layers()
    with progress.task("verifying full INT8 on the eval data"):
        loss0, content0 = trial([])
    sens, chosen, ranker = None, [], None
    if loss0 > max_drop:
        ranker = scorer.subset(rank_samples)
        sens = measure(cal, ranker, progress, layers, with_rmse=False, fallback=fallback)
        trial.quantizations += len(layers) + 1
        ranked = [s.group for s in sens.layers if s.error_share > 0] or [s.group for s in sens.layers]
        with progress.task(f"searching the smallest set of {fallback.value} layers that fits the budget"):
            chosen = _smallest_prefix(trial, ranked, max_drop)
            chosen = _prune(trial, chosen, max_drop, {s.node: s.macs for s in sens.layers})
    loss, content = trial(chosen) if chosen else (loss0, content0)
    if loss > max_drop:  # not met: hand back the best model tried, and say so
        best = min(trial.cache.items(), key=lambda kv: kv[1][0])
        chosen, (loss, content) = sorted(best[0]), best[1]
    records = op_records(content=content)
    prec = {r.name: r.precision for r in records}
    by_node = {s.node: s for s in sens.layers} if sens else {}
    kept = [LayerDecision(layer=l.short, node=l.node, op=l.op, macs=l.macs, precision=prec.get(l.node, Precision.FP32),
                          error_share=by_node[l.node].error_share if l.node in by_node else 0.0)
            for l in layers if l.node in set(chosen)]
    return MixedPlan(metric=scorer.metric, max_drop=max_drop, met=loss <= max_drop, loss_int8=loss0, loss=loss,
                     fallback=fallback, kept=kept, layers_total=len(layers), share=compute_share(records),
                     size_bytes=len(content), search_s=time.perf_counter() - t0, quantizations=trial.quantizations,
                     evaluations=scorer.evaluations + (ranker.evaluations if ranker is not None else 0),
                     sensitivity=sens, content=content,
                     all_integer=all_integer(content) if fallback is Fallback.INT16 else None)


def all_integer(content: bytes) -> bool:
    """No op computes in float (float model I/O converted at the edges is fine), as `edgeq inspect` says."""
    from edgeq.modelinfo import inspect_tflite

    return not inspect_tflite(content=content).float_ops


def _union(groups: list[tuple[str, ...]]) -> list[str]:
    return list(dict.fromkeys(n for g in groups for n in g))


def _smallest_prefix(trial: _Trials, ranked: list[tuple[str, ...]], max_drop: float) -> list[str]:
    """Smallest k such that the k most harmful groups kept float fit the budget (doubling, then bisection)."""
    fits = lambda k: trial(_union(ranked[:k]))[0] <= max_drop  # noqa: E731
    k, lo = 1, 0  # invariant: the prefix of length lo fails
    while k < len(ranked) and not fits(k):
        lo, k = k, min(2 * k, len(ranked))
    hi = k
    if not fits(hi):
        return _union(ranked[:hi])  # even all of them: budget not met
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return _union(ranked[:hi])


def _prune(trial: _Trials, chosen: list[str], max_drop: float, macs: dict[str, int]) -> list[str]:
    """Return kept layers to INT8 where the budget still holds; the biggest compute first."""
    if trial(chosen)[0] > max_drop:
        return chosen
    kept = list(chosen)
    for node in sorted(chosen, key=lambda n: -macs.get(n, 0))[:MAX_PRUNE]:
        if len(kept) <= 1:
            break
        rest = [n for n in kept if n != node]
        if trial(rest)[0] <= max_drop:
            kept = rest
    return kept


def quantize_mixed(fm, options, calib, evalds, progress: Progress | None = None) -> tuple[bytes, dict]:
    """``convert --mode mixed``: the model bytes and the report section (``extra["mixed"]``).

    With ``--ptq auto`` (the default) the prepared full-INT8 model (``--mode int8``) is tried first: when it
    fits the budget, no layer needs higher precision. Otherwise the search starts from it (the calibrated
    model its steps ended with: equalized weights, fitted rounding, corrected biases, searched ranges), so
    the layers left in INT8 keep what the preparation gained. ``--ptq plain`` searches from the converter's
    own calibration.
    """
    from edgeq.convert import representative_data
    from edgeq.modes import PtqChoice

    progress = progress or Silent()
    t = time.perf_counter()
    with progress.task("float model on eval data (the budget's reference)"):
        reference = fm.predict(evalds.inputs)
    evalds.check_labels(reference[0].shape[-1] if reference[0].ndim > 1 else None)
    scorer = Scorer(evalds.inputs, reference, evalds.labels, options.metric)
    auto, cal = None, None
    if getattr(options, "ptq", PtqChoice.PLAIN).prepares:
        from edgeq.quantize.prepare.ptq import prepare_int8

        content, ptq = prepare_int8(fm, calib, options.per_channel, options.io_type, options.ptq, progress)
        auto = (scorer.loss(scorer.outputs(content)), content, ptq.summary)
        cal = ptq.calibrated
    if auto is not None and auto[0] <= options.max_drop:
        plan = _int8_plan(scorer, options, auto)
    else:
        if cal is None:
            with progress.task("calibrating once for every candidate"):
                cal = Calibrated.from_float_model(fm, representative_data(calib, progress),
                                                  options.per_channel, options.io_type, str(fm.source))
        plan = search(cal, scorer, options.max_drop, options.fallback, progress)
        if auto is not None:
            start = "searched from it" if ptq.calibrated is not None else "searched from a plain calibration"
            plan.notes.append(f"full INT8 with graph preparation ({auto[2]}) drops {auto[0]:+.2f}: over budget; "
                              f"{start}")
    plan.search_s = time.perf_counter() - t  # the float reference and calibration are part of the cost
    return plan.content, plan.to_dict()


def _int8_plan(scorer: Scorer, options, auto: tuple[float, bytes, str]) -> MixedPlan:
    """The prepared full-INT8 model fits the budget: report it as a plan that keeps nothing out of INT8."""
    from edgeq.quantize.selective import NOT_CANDIDATES

    loss, content, how = auto
    records = op_records(content=content)
    return MixedPlan(metric=scorer.metric, max_drop=options.max_drop, met=True, loss_int8=loss, loss=loss,
                     fallback=options.fallback, kept=[],
                     layers_total=sum(r.op not in NOT_CANDIDATES for r in records),
                     share=compute_share(records), size_bytes=len(content), search_s=0.0, quantizations=1,
                     evaluations=scorer.evaluations, content=content,
                     notes=[f"full INT8 with graph preparation fits the budget ({how})"],
                     all_integer=all_integer(content) if options.fallback is Fallback.INT16 else None)
