"""edgeq as a library: one function per workflow, typed options in, typed results out.

Every function here is what the matching ``edgeq`` command runs; the CLI only parses flags into these
options and prints the results. Data arguments take a path (.npy, .npz, a folder of images) or in-memory
data: a numpy array, a dict of arrays per input name (``"y"``: labels), an ``(x, y)`` tuple, an iterable of
samples or batches, or a ``tf.data.Dataset``. Model arguments take a path or an in-memory ``keras.Model``.
Enum options take their string values (``ConvertOptions(mode="int8")``). Errors the caller can fix are
:class:`edgeq.errors.EdgeqError` subclasses with a one-line message naming the argument at fault.

Example::

    import numpy as np, edgeq
    x = np.load("calib.npz")["x"]
    report = edgeq.convert(model, edgeq.ConvertOptions(mode="int8", calib=x), out="m_int8.tflite",
                           eval_data=(x_test, y_test))
    print(report.render())
"""
from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from edgeq.datainput import replayable
from edgeq.errors import DataError, OptionError
from edgeq.options import (AnalyzeOptions, BenchOptions, CompareOptions, ConvertOptions, EvalOptions,
                           FinetuneOptions, Layout)

if TYPE_CHECKING:
    from edgeq.bench.compare import Comparison
    from edgeq.bench.result import BenchResult
    from edgeq.evaluate import EvalResult
    from edgeq.modelinfo import ModelInfo
    from edgeq.progress import Progress
    from edgeq.quantize.sensitivity import Sensitivity
    from edgeq.report import ConversionReport

__all__ = ["analyze", "bench", "compare", "convert", "evaluate", "finetune", "inspect"]

ModelLike = Any
"""A model path (.keras, .h5, SavedModel folder, .onnx) or an in-memory ``keras.Model``."""


def _is_keras_object(model: object) -> bool:
    # By duck type: importing Keras to check would make every path-only call pay for it.
    return not isinstance(model, (str, Path)) and hasattr(model, "export") and hasattr(model, "inputs")


@contextmanager
def _model_path(model: ModelLike, stack: ExitStack) -> Iterator[Path]:
    """A path for ``model``: itself, or an in-memory Keras model saved to a temporary ``<name>.keras``.

    Saving is how the pipeline sees the exact same graph a file would give it (custom layers need
    ``keras.saving.register_keras_serializable``, as for any saved model).
    """
    if not _is_keras_object(model):
        yield Path(model)
        return
    from edgeq.errors import ModelLoadError, first_line

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeq-model-")))
    path = tmp / f"{getattr(model, 'name', None) or 'model'}.keras"
    try:
        model.save(path)
    except Exception as exc:  # Keras raises many types for unserializable layers
        raise ModelLoadError(f"model (keras.Model '{model.name}'): cannot be saved for conversion "
                             f"({first_line(exc)[:160]}); register custom layers with "
                             "keras.saving.register_keras_serializable") from exc
    yield path


def _model_label(model: ModelLike) -> str | None:
    return f"<keras.Model '{model.name}'>" if _is_keras_object(model) else None


def convert(model: ModelLike, options: ConvertOptions | None = None, *, out: Path | str | None = None,
            eval_data: Any = None, progress: Progress | None = None, layout: Layout | str | None = None,
            input_shapes: dict[str, tuple[int, ...]] | None = None,
            source_options: dict | None = None) -> ConversionReport:
    """Convert a float model to TFLite in ``options.mode`` and write it atomically to ``out``.

    ``out`` defaults to ``<model folder>/<stem>_<mode>.tflite`` (for an in-memory model:
    ``./<model.name>_<mode>.tflite``). ``eval_data`` adds top-1 of the float and converted models (with
    labels) or agreement/cosine/SQNR against the float model (without). ``input_shapes`` fixes dynamic
    dimensions of ONNX inputs by name; ``source_options`` passes further settings to the source loader
    (e.g. ``{"calibration": None}`` skips the ONNX LayerNorm outlier split). Returns the
    :class:`~edgeq.report.ConversionReport`.
    """
    from edgeq.convert import convert as run_convert
    from edgeq.coerce import as_optional_enum

    options = options or ConvertOptions()
    layout = as_optional_enum(Layout, layout, "layout")
    with ExitStack() as stack:
        path = stack.enter_context(_model_path(model, stack))
        if out is None and _is_keras_object(model):
            out = Path(f"{path.stem}_{options.mode.suffix}.tflite")
        loader = {"input_shapes": dict(input_shapes)} if input_shapes else {}
        loader.update(_onnx_calibration_file(path, options, stack))
        loader.update(source_options or {})  # the caller's explicit settings win
        report = run_convert(path, options, out=out, eval_data=replayable(eval_data), progress=progress,
                             layout=layout, **({"source_options": loader} if loader else {}))
    if label := _model_label(model):
        report.source = label
    return report


def _onnx_calibration_file(path: Path, options: ConvertOptions, stack: ExitStack) -> dict:
    """ONNX encoders measure LayerNorm outliers on a calibration .npz before conversion: in-memory arrays
    get a temporary one for that step only (the pipeline itself, and its errors, still see the arrays)."""
    import numpy as np

    from edgeq.modes import Mode

    calib = options.calib
    int8_acts = options.mode.spec.int8_activations
    if path.suffix.lower() != ".onnx" or not int8_acts or calib is None or isinstance(calib, Path):
        return {}
    if isinstance(calib, np.ndarray):
        arrays = {"x": calib}
    elif isinstance(calib, dict):
        arrays = {k: np.asarray(v) for k, v in calib.items() if k not in ("y", "labels", "label")}
    else:
        return {}  # iterables and tf.data: converted as given, without the outlier split
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeq-calib-")))
    np.savez(tmp / "calib.npz", **arrays)
    return {"calibration": tmp / "calib.npz"}


def analyze(model: ModelLike, calib: Any, eval_data: Any = None, options: AnalyzeOptions | None = None, *,
            plot: Path | str | None = None, progress: Progress | None = None) -> Sensitivity:
    """Per-layer INT8 sensitivity: which layers cause the accuracy full INT8 loses, most harmful first.

    Without ``eval_data`` the calibration samples are scored (agreement with the float model); give
    held-out labelled data for top-1. ``plot`` also writes a PNG bar chart (needs ``edgeq[plot]``).
    """
    from edgeq.quantize.sensitivity import analyze as run_analyze

    options = options or AnalyzeOptions()
    if plot is not None:  # fail before minutes of analysis, not after
        from edgeq.extras import require
        from edgeq.fileio import check_writable

        require("matplotlib")
        check_writable(Path(plot), inputs=[p for p in (model, calib, eval_data) if isinstance(p, (str, Path))])
    with ExitStack() as stack:
        path = stack.enter_context(_model_path(model, stack))
        sens = run_analyze(path, calib, eval_data, per_channel=options.per_channel, metric=options.metric,
                           calib_samples=options.calib_samples, progress=progress, layout=options.layout,
                           fallback=options.fallback, ptq=options.ptq)
    if plot is not None:
        from edgeq.quantize.sensitivity_plot import plot_sensitivity

        name = _model_label(model) or (Path(model).name if Path(model).stem != "model"
                                       else f"{Path(model).parent.name}/{Path(model).name}")
        plot_sensitivity(sens, Path(plot), title=f"{name}: INT8 sensitivity per layer "
                                                 f"(full INT8 {sens.loss_int8:+.2f} {sens.metric.value} pt)")
    return sens


def finetune(model: ModelLike, train_data: Any, eval_data: Any, out_dir: Path | str,
             options: FinetuneOptions | None = None, *, progress: Progress | None = None,
             on_epoch: Callable | None = None, holdout_data: Any = None) -> ConversionReport:
    """Quantization-aware fine-tuning of a Keras model; writes ``<out_dir>/<name>_qat_int8.tflite`` and the
    fine-tuned float ``<out_dir>/<name>_qat.keras``.

    Without labels in ``train_data`` the float model teaches (distillation). The report compares, on
    ``eval_data``, agreement with float (and top-1 with labels) of post-training INT8 and QAT INT8.
    ``holdout_data``, when given, is where those numbers are measured instead, and ``eval_data`` only chooses
    the epoch (early stopping): numbers from data no choice has seen. ``on_epoch`` receives each epoch's stats.
    When QAT's INT8 model does not beat post-training INT8 on ``eval_data``, the post-training model is written
    (``options.keep_better``; the report's ``qat.shipped`` says which).
    """
    from edgeq.qat.pipeline import QATOptions, TrainConfig, finetune as run_finetune

    o = options or FinetuneOptions()
    qat = QATOptions(train=TrainConfig(epochs=o.epochs, learning_rate=o.learning_rate, batch_size=o.batch_size,
                                       seed=o.seed, distill_weight=o.distill_weight, patience=o.patience),
                     io=o.io, ptq_calib_samples=o.ptq_calib_samples, keep_better=o.keep_better)
    with ExitStack() as stack:
        path = stack.enter_context(_model_path(model, stack))
        report = run_finetune(path, train_data, eval_data, Path(out_dir), qat, progress=progress, on_epoch=on_epoch,
                              eval_data=holdout_data)
    if label := _model_label(model):
        report.source = label
    return report


def evaluate(model: Path | str | bytes, data: Any, *, reference: ModelLike | None = None,
             options: EvalOptions | None = None, progress: Progress | None = None) -> EvalResult:
    """Accuracy of a .tflite (path or bytes) on ``data``: top-1 with labels; with ``reference`` (the float
    source model) also its top-1, the drop, and agreement/cosine/SQNR against it."""
    from edgeq.evaluate import evaluate_file

    options = options or EvalOptions()
    with ExitStack() as stack:
        if isinstance(model, (bytes, bytearray)):
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeq-eval-")))
            (tmp / "model.tflite").write_bytes(bytes(model))
            model = tmp / "model.tflite"
        ref = stack.enter_context(_model_path(reference, stack)) if reference is not None else None
        return evaluate_file(Path(model), data, ref, limit=options.eval_samples, progress=progress,
                             layout=options.layout)


def inspect(model: Path | str | bytes, xnnpack: bool = False) -> ModelInfo:
    """What is inside a .tflite (path or bytes): I/O dtype/shape/quantization, ops, tensor dtypes,
    per-channel weights, float ops, known kernel hazards; ``xnnpack`` adds which nodes XNNPACK takes and
    why it leaves the others on the CPU."""
    from edgeq.modelinfo import inspect_tflite

    if isinstance(model, (bytes, bytearray)):
        return inspect_tflite(content=bytes(model), xnnpack=xnnpack)
    return inspect_tflite(Path(model), xnnpack=xnnpack)


def bench(models: Iterable[Path | str] | Path | str, options: BenchOptions | None = None, *,
          out_dir: Path | str | None = None, progress: Progress | None = None) -> list[BenchResult]:
    """Latency (init, first run, p50/p90/p99), peak memory and delegate coverage of .tflite models on each
    target (``host``, a profile, ``adb[:SERIAL]``, ``ssh://user@host``), each model in a fresh process.

    A model that fails is a result with ``error`` set; the others still run. ``out_dir`` also writes
    ``bench.json`` and ``bench.md``.
    """
    from edgeq.bench.devices import DeviceBenchOptions
    from edgeq.bench.host import HostBenchOptions
    from edgeq.bench.multi import bench_targets
    from edgeq.transport.ssh import SshOptions

    o = options or BenchOptions()
    models = [Path(models)] if isinstance(models, (str, Path)) else [Path(m) for m in models]
    if isinstance(o.inputs, (str, Path)) and not Path(o.inputs).is_file():
        raise DataError(f"`inputs={o.inputs}`: no such file; give an .npz")
    if out_dir is not None:
        check_out_dir(Path(out_dir), inputs=[*models, o.inputs if isinstance(o.inputs, (str, Path)) else None])
    with ExitStack() as stack:
        inputs = _inputs_file(o.inputs, stack)
        host = HostBenchOptions(threads=(1,), runs=o.runs, warmup=o.warmup, xnnpack=o.xnnpack and o.delegate != "none",
                                delegate_lib=str(o.delegate_lib) if o.delegate_lib else None,
                                delegate_options=dict(o.delegate_options), inputs=inputs, timeout_s=o.timeout_s)
        device = DeviceBenchOptions(runs=o.runs, warmup=o.warmup, benchmark_binary=o.benchmark_binary,
                                    delegate=o.delegate or "xnnpack", delegate_explicit=o.delegate is not None,
                                    delegate_options=dict(o.delegate_options), cores=o.cores,
                                    op_profile=o.op_profile, check_outputs=o.check_outputs, timeout_s=o.timeout_s,
                                    ssh=SshOptions(identity=o.ssh_identity, known_hosts=o.known_hosts,
                                                   accept_new_host_key=o.accept_new_host_key))
        results = bench_targets(list(o.targets), models, threads=o.threads, host=host, device=device,
                                progress=progress)
    if out_dir is not None:
        from edgeq.bench.render import render_markdown
        from edgeq.fileio import atomic_write_text

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "bench.json", json.dumps([r.to_dict() for r in results], indent=2) + "\n")
        atomic_write_text(out_dir / "bench.md", render_markdown(results))
    return results


def _inputs_file(inputs: Any, stack: ExitStack) -> Path | None:
    """Bench workers read an .npz: in-memory inputs (an array or a dict of arrays) are written to one."""
    if inputs is None:
        return None
    if isinstance(inputs, Path):
        if not inputs.is_file():
            raise DataError(f"`inputs={inputs}`: no such file; give an .npz")
        return inputs
    import numpy as np

    if isinstance(inputs, np.ndarray):
        arrays = {"x": inputs}
    elif isinstance(inputs, dict):
        arrays = {k: np.asarray(v) for k, v in inputs.items() if k not in ("y", "labels", "label")}
    else:
        raise OptionError(f"inputs: a {type(inputs).__name__} cannot feed a benchmark; give an .npz path, an "
                          "array or a dict of arrays per input name (the first sample is used)")
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgeq-bench-")))
    np.savez(tmp / "inputs.npz", **arrays)
    return tmp / "inputs.npz"


def check_out_dir(out: Path, inputs=(), names: tuple[str, ...] = ("bench.json", "bench.md")) -> None:
    """Fail before minutes of benchmarking when the results folder cannot be written, or when a result
    file would replace one of ``inputs``."""
    from edgeq.errors import OutputError
    from edgeq.fileio import check_not_input, check_writable

    if out.exists() and not out.is_dir():
        raise OutputError(f"`out_dir={out}`: is a file; give a folder for {' and '.join(names)}")
    for name in names:
        check_not_input(out / name, inputs)
    check_writable(out / names[0] if out.is_dir() else out)


def compare(models: Iterable[Path | str], options: CompareOptions | None = None, *,
            out_dir: Path | str | None = None, progress: Progress | None = None) -> Comparison:
    """One table of model variants x targets: size, accuracy and p50 latency, the Pareto front marked.

    Accuracy comes from ``options.reports`` (convert reports: paths or objects) or is measured on
    ``options.eval_data``; latency from ``options.results`` (bench results: paths or objects) and/or fresh
    runs on ``options.targets`` (default: host when no results are given). ``out_dir`` writes compare.md,
    compare.json and compare.png (the plot only when ``edgeq[plot]`` is installed).
    """
    from edgeq.bench import compare as cmp
    from edgeq.bench.result import BenchResult

    o = options or CompareOptions()
    models = [Path(m) for m in ([models] if isinstance(models, (str, Path)) else models)]
    if not models:
        raise DataError("no .tflite models given; pass the variants to compare, e.g. m_fp32.tflite m_int8.tflite")
    if out_dir is not None:
        paths = [p for p in (*o.reports, *o.results, o.eval_data) if isinstance(p, (str, Path))]
        check_out_dir(Path(out_dir), inputs=[*models, *paths], names=("compare.md", "compare.json", "compare.png"))
    results: list[BenchResult] = []
    for r in o.results:
        if isinstance(r, BenchResult):
            results.append(r)
            continue
        try:
            results += [BenchResult.from_dict(d) for d in json.loads(Path(r).read_text())]
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{r}: not an 'edgeq bench --json' result list ({exc})") from None
    targets = list(o.targets) or ([] if o.results else ["host"])
    if targets:
        results += bench(models, BenchOptions(targets=tuple(targets), threads=o.threads, runs=o.runs,
                                              warmup=o.warmup), progress=progress)
    accuracies, modes = _report_accuracies(o.reports)
    if o.eval_data is not None:
        accuracies.update(_measure(models, replayable(o.eval_data), progress))
    comparison = cmp.build(models, results, accuracies, modes)
    if out_dir is not None:
        _write_comparison(comparison, Path(out_dir))
    return comparison


def _report_accuracies(reports: tuple) -> tuple[dict, dict]:
    from edgeq.bench import compare as cmp

    paths = [r for r in reports if isinstance(r, (str, Path))]
    acc, modes = cmp.read_reports([Path(p) for p in paths])
    for r in reports:
        if isinstance(r, (str, Path)):
            continue
        name, a = Path(r.output).name, r.accuracy
        modes[name] = r.mode
        if a is not None and a.top1 is not None:
            acc[name] = cmp.Accuracy(100.0 * a.top1, "top1", r.source)
        elif a is not None and a.vs_float is not None:
            acc[name] = cmp.Accuracy(100.0 * a.vs_float.agreement, "agreement", r.source)
    return acc, modes


def _measure(models: list[Path], data: Any, progress: Progress | None) -> dict:
    from edgeq.bench.compare import Accuracy
    from edgeq.evaluate import evaluate_file

    acc = {}
    for m in models:
        if not m.is_file():
            continue  # the bench step already reported it
        r = evaluate_file(m, data, progress=progress)
        if r.top1 is None:
            raise DataError(f"`eval_data={r.data}`: has no labels 'y'; top-1 needs labels (or pass convert reports)")
        acc[m.name] = Accuracy(100.0 * r.top1, "top1", r.data)
    return acc


def _write_comparison(comparison: Comparison, out: Path) -> None:
    import importlib.util
    import warnings

    from edgeq.bench import compare as cmp
    from edgeq.fileio import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.md", cmp.render_markdown(comparison))
    atomic_write_text(out / "compare.json", json.dumps(comparison.to_dict(), indent=2) + "\n")
    if importlib.util.find_spec("matplotlib") is None:  # the tables are the result; the plot is a bonus
        comparison.notes.append("no compare.png: plots need `pip install edgeq[plot]`")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cmp.plot_pareto(comparison, out / "compare.png") is None:
            comparison.notes.append("no variant has both accuracy and latency; no plot written")
