"""Per-layer sensitivity to INT8: which layers cause the accuracy lost by full-INT8 quantization.

Two measurements per layer, both in the LiteRT runtime:
- ``rmse_scale``: the layer's own error (QuantizationDebugger's metric): the quantized op and its float
  twin run on the *same* quantized input, RMSE of the difference in units of the output's quantization
  step. About 0.29 is the ideal rounding error of a uniform quantizer; well above that the layer's
  range is poorly covered by 256 levels.
- ``error_share``: the share of the full-INT8 model's output error (normalized MSE against the float
  model) that goes away when only this layer and its output activation stay float (its readers are
  left float too: an int8 reader would round the activation to int8 anyway). This is what the mixed
  search ranks by: it includes how much the error is amplified downstream, which a per-layer number
  cannot see.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

import numpy as np

from edgeq import metrics
from edgeq.errors import DataError
from edgeq.modes import Fallback, Metric, PtqChoice
from edgeq.progress import Progress, Silent
from edgeq.quantize.selective import Calibrated, Layer

DEBUG_SAMPLES = 64  # the per-layer RMSE settles within a few dozen samples


class Scorer:
    """Runs candidate models on fixed data and scores them against the float model's outputs."""

    def __init__(self, inputs: dict[str, np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None,
                 metric: Metric | None = None):
        self.inputs, self.reference, self.labels = inputs, reference, labels
        self.metric = metric or (Metric.TOP1 if labels is not None else Metric.AGREEMENT)
        if self.metric is Metric.TOP1 and labels is None:
            raise DataError("`metric`=top1 needs labels in the eval data (an integer array 'y'); "
                            "use `metric=agreement` to compare with the float model instead")
        self.evaluations = 0

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, n: int) -> "Scorer":
        if n >= len(self):
            return self
        return Scorer({k: v[:n] for k, v in self.inputs.items()}, [r[:n] for r in self.reference],
                      None if self.labels is None else self.labels[:n], self.metric)

    def outputs(self, content: bytes) -> list[np.ndarray]:
        from edgeq.runtime import TFLiteRunner

        self.evaluations += 1
        return TFLiteRunner(content=content).run(self.inputs, batch_size=256)

    def loss(self, outs: list[np.ndarray]) -> float:
        """What the budget limits, in points (percent; positive = worse than the float model)."""
        return metric_loss(self.metric, self.reference, outs, self.labels)

    def nmse(self, outs: list[np.ndarray]) -> float:
        """Output error energy relative to the float output energy (0 = identical)."""
        r = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in self.reference], 1)
        o = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in outs], 1)
        return float(np.sum((o - r) ** 2) / max(np.sum(r ** 2), 1e-30))


def metric_loss(metric: Metric, reference: list[np.ndarray], outs: list[np.ndarray],
                labels: np.ndarray | None) -> float:
    """Points lost against the float model: top-1 points, disagreement %, 100*(1-cosine), or noise %."""
    if metric is Metric.TOP1:
        return 100.0 * (metrics.top1(reference[0], labels) - metrics.top1(outs[0], labels))
    if metric is Metric.AGREEMENT:
        return 100.0 * (1.0 - metrics.agreement(reference[0], outs[0]))
    r = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in reference], 1)
    o = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in outs], 1)
    if metric is Metric.COSINE:
        return 100.0 * (1.0 - metrics.cosine(r, o))
    return 100.0 * 10.0 ** (-metrics.sqnr_db(r, o) / 10.0)  # SQNR as noise power in % of signal power


@dataclass(frozen=True)
class LayerSensitivity:
    """How much one layer contributes to the INT8 error (see the module docstring)."""

    layer: str
    node: str
    op: str
    macs: int
    error_share: float  # of the all-INT8 output error removed by keeping this layer (+ its output) float
    loss_alone: float  # metric loss (points, scoring subset) with only this layer float
    rmse_scale: float | None = None  # None: the op has no float twin to compare (e.g. boundary ops)
    group: tuple[str, ...] = ()  # nodes left float for this measurement: the layer and its readers


@dataclass
class Sensitivity:
    """All layers, most harmful first, plus the all-INT8 reference numbers."""

    metric: Metric
    samples: int
    loss_int8: float  # metric loss of the all-INT8 model on the scoring samples
    nmse_int8: float
    layers: list[LayerSensitivity]
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    fallback: Fallback = Fallback.FP32  # what each layer was kept in while scored: float, or int16

    def to_dict(self) -> dict:
        return {"metric": self.metric.value, "fallback": self.fallback.value, "samples": self.samples,
                "loss_int8": round(self.loss_int8, 4),
                "nmse_int8": self.nmse_int8, "seconds": round(self.seconds, 2), "notes": self.notes,
                "layers": [asdict(s) for s in self.layers]}


def layer_rmse_scale(cal: Calibrated, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """QuantizationDebugger's per-layer RMSE/scale, run in LiteRT: node name -> value."""
    from tensorflow.lite.python import convert as tfconvert

    from edgeq.modelinfo import open_interpreter
    from edgeq.nativeio import quiet_native_output

    with quiet_native_output():
        debug = tfconvert.mlir_quantize(cal.content, disable_per_channel=not cal.per_channel,
                                        enable_numeric_verify=True)
    from ai_edge_litert.interpreter import Interpreter

    open_interpreter(content=debug)  # one-line error if LiteRT cannot load it
    with quiet_native_output():
        interp = Interpreter(model_content=debug, experimental_preserve_all_tensors=True)
        interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    verify = [op for op in interp._get_ops_details()  # noqa: SLF001
              if op["op_name"] in ("NumericVerify", "NUMERIC_VERIFY")]
    sums: dict[str, list[float]] = {}
    n = len(next(iter(inputs.values())))
    details = interp.get_input_details()
    for i in range(n):  # one sample at a time: the debug graph is built for batch 1
        with quiet_native_output():
            for d, x in zip(details, inputs.values()):
                interp.set_tensor(d["index"], x[i:i + 1].astype(d["dtype"], copy=False))
            interp.invoke()
        for op in verify:
            q = tensors[op["inputs"][0]]
            scale = q["quantization"][0] or 1.0
            diff = interp.get_tensor(op["outputs"][0]).astype(np.float64)
            acc = sums.setdefault(q["name"], [0.0, 0.0])
            acc[0] += float(np.sum((diff / scale) ** 2))
            acc[1] += diff.size
    return {name: float(np.sqrt(s / max(c, 1))) for name, (s, c) in sums.items()}


def measure(cal: Calibrated, scorer: Scorer, progress: Progress | None = None,
            layers: list[Layer] | None = None, with_rmse: bool = True,
            fallback: Fallback = Fallback.FP32) -> Sensitivity:
    """Score every layer: quantize with only it kept out of INT8, run the scoring data, compare with all-INT8.

    ``fallback`` is the precision the group is kept in: float (FP32; FP16 ranks the same) or int16
    activations (INT16: what 16 bits instead of 8 buy, with the weights still int8)."""
    keep = Fallback.INT16 if fallback is Fallback.INT16 else Fallback.FP32
    progress = progress or Silent()
    t = time.perf_counter()
    layers = layers if layers is not None else cal.layers()
    readers = cal.consumers()
    base = scorer.outputs(cal.quantize())
    loss0, nmse0 = scorer.loss(base), scorer.nmse(base)
    rmse: dict[str, float] = {}
    notes: list[str] = []
    if with_rmse:
        with progress.task("per-layer RMSE/scale (QuantizationDebugger metric)"):
            try:
                rmse = layer_rmse_scale(cal, {k: v[:DEBUG_SAMPLES] for k, v in scorer.inputs.items()})
            except Exception as exc:  # noqa: BLE001 - an optional diagnostic must not sink the analysis
                notes.append(f"per-layer RMSE/scale unavailable: {type(exc).__name__}")
    result = []
    how = "moved to int16" if keep is Fallback.INT16 else "left float"
    with progress.task(f"scoring {len(layers)} layers {how} one at a time", total=len(layers)) as step:
        for layer in layers:
            group = tuple(dict.fromkeys([layer.node, *readers.get(layer.node, [])]))
            outs = scorer.outputs(cal.candidate(list(group), keep))
            share = 1.0 - scorer.nmse(outs) / nmse0 if nmse0 > 0 else 0.0
            result.append(LayerSensitivity(layer=layer.short, node=layer.node, op=layer.op, macs=layer.macs,
                                           error_share=round(share, 5), loss_alone=round(scorer.loss(outs), 4),
                                           rmse_scale=_lookup(rmse, layer.node), group=group))
            step.advance()
    result.sort(key=lambda s: (-s.error_share, s.macs))
    return Sensitivity(metric=scorer.metric, samples=len(scorer), loss_int8=loss0, nmse_int8=nmse0,
                       layers=result, seconds=time.perf_counter() - t, notes=notes, fallback=keep)


def _lookup(rmse: dict[str, float], node: str) -> float | None:
    # The debug graph renames the quantized tensor by appending one digit to the layer's name.
    for name in [node] + [f"{node}{d}" for d in range(10)]:
        if name in rmse:
            return round(rmse[name], 4)
    return None


def analyze(model, calib, eval_data=None, per_channel: bool = True, metric: Metric | None = None,
            calib_samples: int | None = None, progress: Progress | None = None, layout=None,
            fallback: Fallback = Fallback.FP32, ptq: PtqChoice = PtqChoice.PLAIN) -> Sensitivity:
    """``edgeq analyze``: per-layer INT8 sensitivity of a float model (.keras, SavedModel, .onnx).

    Without ``eval_data`` the calibration samples are scored against the float model (no labels needed,
    default metric: agreement); give held-out data with labels for top-1. ``ptq`` other than plain ranks
    the layers of edgeq's prepared INT8 (the model ``--mode mixed`` searches from) instead of the
    converter's own calibration.
    """
    from pathlib import Path

    from edgeq.convert import representative_data
    from edgeq.data import load_dataset
    from edgeq.modes import IOType
    from edgeq.sources import load_float_model

    progress = progress or Silent()
    with ExitStack() as stack:
        with progress.task(f"loading {Path(model).name}"):  # owned at once: a signal must not leak its export
            fm = stack.enter_context(load_float_model(Path(model)))
        cal_ds = load_dataset(calib, fm.inputs, limit=calib_samples, layout=layout, name="calib")
        data = (load_dataset(eval_data, fm.inputs, layout=layout, name="eval_data") if eval_data is not None
                else cal_ds)
        with progress.task("float model on the scoring data"):
            reference = fm.predict(data.inputs)
        data.check_labels(reference[0].shape[-1] if reference[0].ndim > 1 else None)
        scorer = Scorer(data.inputs, reference, data.labels, metric)
        plan = None
        if ptq is not PtqChoice.PLAIN:  # rank edgeq's prepared INT8, the model --mode mixed searches from
            from edgeq.quantize.prepare.ptq import prepare_int8

            plan = prepare_int8(fm, cal_ds, per_channel, IOType.FLOAT32, ptq, progress)[1]
        cal = plan.calibrated if plan is not None else None
        if cal is None:  # --ptq plain, or the preparation ended without a calibrated model
            with progress.task("calibrating"):
                cal = Calibrated.from_float_model(fm, representative_data(cal_ds, progress),
                                                  per_channel, IOType.FLOAT32, str(model))
        sens = measure(cal, scorer, progress, fallback=fallback)
        if plan is not None and plan.calibrated is not None:
            sens.notes.append(f"ranked on edgeq's prepared INT8 ({plan.summary})")
        if eval_data is None:
            sens.notes.append("scored on the calibration data (no --eval given)")
        return sens

