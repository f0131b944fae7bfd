"""Accuracy of a .tflite model on data, alone or against its float model."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeq import metrics
from edgeq.data import Dataset
from edgeq.progress import Progress, Silent
from edgeq.runtime import TFLiteRunner


@dataclass(frozen=True)
class OutputComparison:
    """How closely a model's outputs follow a reference model's on the same inputs."""

    agreement: float  # share of samples with the same top-1 class
    cosine: float
    sqnr_db: float
    max_abs_error: float

    @classmethod
    def of(cls, reference: list[np.ndarray], outputs: list[np.ndarray]) -> "OutputComparison":
        r, o = _flat(reference), _flat(outputs)
        return cls(agreement=metrics.agreement(reference[0], outputs[0]), cosine=metrics.cosine(r, o),
                   sqnr_db=metrics.sqnr_db(r, o), max_abs_error=metrics.max_abs_error(r, o))


def _flat(outs: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in outs], axis=1)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy on one data set: top-1 with labels, and agreement with the float model when it is known."""

    data: str
    samples: int
    top1: float | None = None
    float_top1: float | None = None
    vs_float: OutputComparison | None = None

    @property
    def drop_points(self) -> float | None:
        """Top-1 lost against the float model, in percentage points (positive = worse)."""
        if self.top1 is None or self.float_top1 is None:
            return None
        return round(100.0 * (self.float_top1 - self.top1), 4)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["drop_points"] = self.drop_points
        return d


def run_tflite(model: Path | bytes, dataset: Dataset, progress: Progress | None = None,
               num_threads: int | None = None) -> list[np.ndarray]:
    """Float outputs of a .tflite (path or bytes) on every sample of ``dataset``."""
    runner = (TFLiteRunner(content=model, num_threads=num_threads) if isinstance(model, (bytes, bytearray))
              else TFLiteRunner(path=Path(model), num_threads=num_threads))
    with (progress or Silent()).task("running LiteRT on eval data", total=len(dataset)) as step:
        return runner.run(dataset.inputs, progress_step=step)


def evaluate(model: Path | bytes, dataset: Dataset, reference: list[np.ndarray] | None = None,
             progress: Progress | None = None) -> EvalResult:
    """Evaluate a .tflite on ``dataset``; ``reference`` are the float model's outputs on the same data."""
    outs = run_tflite(model, dataset, progress)
    dataset.check_labels(outs[0].shape[-1] if outs[0].ndim > 1 else None)
    labels = dataset.labels
    return EvalResult(
        data=str(dataset.source), samples=len(dataset),
        top1=metrics.top1(outs[0], labels) if labels is not None else None,
        float_top1=metrics.top1(reference[0], labels) if labels is not None and reference is not None else None,
        vs_float=OutputComparison.of(reference, outs) if reference is not None else None)


def tflite_input_specs(model: Path | bytes) -> list:
    """The data a .tflite wants, as TensorSpecs: quantized inputs take float data (edgeq quantizes it)."""
    from edgeq.sources.base import TensorSpec

    runner = (TFLiteRunner(content=model) if isinstance(model, (bytes, bytearray)) else TFLiteRunner(path=Path(model)))
    specs = []
    for name, d in runner.input_names.items():
        dtype = np.dtype(d["dtype"])
        quantized = d["quantization"][0] != 0.0
        shape_sig = d.get("shape_signature", d["shape"])
        shape = (None, *(None if s < 0 else int(s) for s in shape_sig[1:]))
        specs.append(TensorSpec(name=name, shape=shape, dtype="float32" if quantized or dtype.kind == "f"
                                else dtype.name))
    return specs


def evaluate_file(model: Path, data, reference: Path | None = None, limit: int | None = None,
                  progress: Progress | None = None, layout=None) -> EvalResult:
    """``edgeq eval``: accuracy of a .tflite on labeled data (a path or in-memory data), optionally against
    a float source model."""
    from edgeq.data import load_dataset

    model = Path(model)
    specs = tflite_input_specs(model)
    if reference is None:
        ds = load_dataset(data, specs, limit=limit, layout=layout, name="eval_data")
        return evaluate(model, ds, None, progress)
    from edgeq.sources import load_float_model

    with load_float_model(Path(reference)) as fm:
        ds = load_dataset(data, fm.inputs, limit=limit, layout=layout, name="eval_data")
        ref = fm.predict(ds.inputs)
    return evaluate(model, ds, ref, progress)
