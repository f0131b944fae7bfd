"""ONNX models -> FloatModel: onnx2tf makes the float SavedModel, onnxruntime is the float reference.

Only the float graph comes from onnx2tf; calibration, quantization, checks, report and accuracy are
the same code as for Keras input. Steps:

1. load and check the .onnx (corrupt files, unknown ops and unfixable dynamic dims fail here, named);
2. rewrite PyTorch's Erf-GELU into the order LiteRT fuses to its builtin GELU (no FlexErf);
   (modes with quantized activations also get ``rewrites.int8``: tanh-GELU, clamped mask constants);
3. onnx2tf (offline, in a private temporary directory) -> the first float graph that agrees with
   onnxruntime (tf_converter's tf_keras model, or the flatbuffer_direct backend's SavedModel for
   token-input encoders) -> SavedModel named by the ONNX input/output names (NCHW image inputs become
   NHWC, as TFLite wants);
4. ``predict`` runs onnxruntime on the *original* model, taking NHWC data like every FloatModel and
   transposing to the ONNX layout; ``extra["check_float"]`` compares the pipeline's FP32 TFLite with it.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgeq.errors import ConversionError, ModelLoadError, first_line
from edgeq.sources.base import FloatModel, TensorSpec
from edgeq.sources.onnx.fidelity import DEFAULT_TOLERANCE, check_fidelity, synthetic_inputs

_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
                10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


def read_onnx(path: Path):
    """Load and check ``path``; anything that is not a valid ONNX model raises ModelLoadError."""
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelLoadError(f"{path}: not a valid ONNX model ({first_line(exc)[:160]}); re-export it "
                             "(e.g. torch.onnx.export)") from exc
    if not model.graph.input:
        raise ModelLoadError(f"{path}: the ONNX graph has no inputs; re-export it with its inputs")
    return model


def onnx_specs(model, values) -> list[TensorSpec]:
    """TensorSpecs of graph inputs or outputs; symbolic or unknown dims are None."""
    init = {i.name for i in model.graph.initializer}
    specs = []
    for v in values:
        if v.name in init:
            continue
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
        specs.append(TensorSpec(name=v.name, shape=shape, dtype=_ONNX_DTYPES.get(t.elem_type, "float32")))
    return specs


def fix_shapes(path: Path, specs: list[TensorSpec], shapes: dict[str, tuple[int, ...]] | None,
               batch: int | None = None) -> list[TensorSpec]:
    """Apply ``--input-shape`` values, then ``batch`` to a still dynamic batch dim; every dim but the batch
    must end up fixed."""
    shapes = dict(shapes or {})
    names = [s.name for s in specs]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise ModelLoadError(f"{path}: --input-shape names unknown input(s) {', '.join(unknown)}; "
                             f"the model's inputs are {', '.join(names)}")
    out = []
    for s in specs:
        shape = s.shape
        if s.name in shapes:
            new = tuple(int(d) for d in shapes[s.name])
            if len(new) != len(s.shape) or any(d <= 0 for d in new) or any(
                    o is not None and o != n for o, n in zip(s.shape, new)):
                raise ModelLoadError(f"{path}: --input-shape {s.name}={','.join(map(str, new))} does not fit "
                                     f"input {s.describe()}; give {len(s.shape)} positive dims keeping fixed ones")
            shape = new
        if batch is not None and shape and shape[0] is None:
            shape = (batch, *shape[1:])
        if any(d is None for d in shape[1:]):
            dims = ",".join("N" if d is None else str(d) for d in shape)
            raise ModelLoadError(f"{path}: input '{s.name}' has dynamic dims ({dims}); fix them with "
                                 f"--input-shape {s.name}=1,... (e.g. a sequence length of 128)")
        out.append(TensorSpec(s.name, shape, s.dtype))
    return out


def _set_input_dims(model, specs: list[TensorSpec], fixed_names: set[str], renamed: dict[str, str]) -> None:
    """Write the fixed shapes of ``fixed_names`` into the graph inputs, so onnx2tf sees static dims on every
    path."""
    fixed = {renamed.get(s.name, s.name): s.shape for s in specs if s.name in fixed_names}
    for v in model.graph.input:
        if v.name in fixed:
            for dim, value in zip(v.type.tensor_type.shape.dim, fixed[v.name]):
                dim.Clear()
                dim.dim_value = int(value)


def _lift_note(lifted: list[str]) -> list[str]:
    return [f"tensor(s) {', '.join(lifted)} have no leading batch axis in the ONNX model; the TFLite model "
            "takes them with one of size 1"] if lifted else []


def _probe_feeds(specs: list[TensorSpec], renamed: dict[str, str]) -> list[dict[str, np.ndarray]]:
    """Two differing inputs of the fixed shapes (zeros, seeded noise; integer inputs zero in both), for
    evaluating conditions that must not depend on the data."""
    rng = np.random.default_rng(0)
    feeds = [{}, {}]
    for s in specs:
        shape = tuple(1 if d is None else d for d in s.shape)
        name = renamed.get(s.name, s.name)
        feeds[0][name] = np.zeros(shape, s.dtype)
        feeds[1][name] = (rng.standard_normal(shape).astype(s.dtype) if s.dtype.startswith("float")
                          else np.zeros(shape, s.dtype))
    return feeds


def _channel_last(shape: tuple) -> tuple:
    return (shape[0], *shape[2:], shape[1]) if len(shape) >= 3 else shape


def _fits(shape: tuple, want: tuple) -> bool:
    return len(shape) == len(want) and all(w is None or w == d for w, d in zip(want, shape))


def ort_session(model_bytes: bytes, path: Path | str):
    """An onnxruntime session; a graph onnx.checker passed but onnxruntime refuses is one ModelLoadError."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # fatal only: a refused graph is reported below, in one line
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime's own graph optimizations can fail on a valid graph
        pass  # (1.26 constant-folding silero-vad's If nodes at static shapes): retry without them
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's messages lead with a C++ signature: keep what follows it
        why = re.sub(r"^.*?\[with [^\]]*\]\s*", "", " ".join(first_line(exc).split()))
        raise ModelLoadError(f"{path}: onnxruntime rejects the graph ({why[:160]}); the file is damaged or "
                             "the exporter wrote an invalid model: re-export it") from None


def make_predict(model_bytes: bytes, onnx_in: list[TensorSpec], tf_in: list[TensorSpec],
                 tf_out: list[TensorSpec], out_order: list[str]):
    """onnxruntime on the original model, fed channel-last data like every FloatModel."""
    from edgeq.runtime import join_rows

    session = ort_session(model_bytes, "<onnx model>")
    # onnx2tf moves axis 1 to the end for rank >= 3 inputs (NCHW -> NHWC); the TF shape says whether it did.
    to_onnx = {o.name: o.shape != t.shape and _fits(_channel_last(o.shape), t.shape) for o, t in zip(onnx_in, tf_in)}
    # Row by row when either side has a fixed batch of 1: a graph that reduces over the batch axis (a
    # melspectrogram's top-dB clip takes the max over everything) means per sample what the TFLite model does.
    batch_one = (any(i.shape and i.shape[0] == 1 for i in session.get_inputs())
                 or bool(tf_in) and all(t.shape and t.shape[0] == 1 for t in tf_in))

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        ort_feeds = {}
        for o, t in zip(onnx_in, tf_in):
            x = np.asarray(feeds[t.name])
            if to_onnx[o.name]:
                x = np.moveaxis(x, -1, 1)
            ort_feeds[o.name] = np.ascontiguousarray(x.astype(o.dtype, copy=False))
        n = len(next(iter(ort_feeds.values()))) if ort_feeds else 0
        if batch_one:  # the export fixed batch 1: run the rows one by one
            runs = [session.run(None, {k: v[i:i + 1] for k, v in ort_feeds.items()}) for i in range(n)]
            values = [join_rows(list(parts), True) for parts in zip(*runs)]
        else:
            values = session.run(None, ort_feeds)
        res = dict(zip([o.name for o in session.get_outputs()], values))
        outs = []
        for name, spec in zip(out_order, tf_out):
            y = res[name]
            if not _fits(y.shape, spec.shape) and _fits(_channel_last(y.shape), spec.shape):
                y = np.moveaxis(y, 1, -1)  # onnx2tf made this output channel-last too
            outs.append(y)
        return outs

    return predict


def load_onnx(path: Path, input_shapes: dict[str, tuple[int, ...]] | None = None,
              fidelity_tolerance: float = DEFAULT_TOLERANCE, quantized_activations: bool = False,
              calibration: Path | None = None, batch: int | None = 1, **_ignored) -> FloatModel:
    """Convert ``path`` (.onnx) to a FloatModel; ``input_shapes`` fixes dynamic dims (name -> shape), ``batch``
    a dynamic batch dim left over (None keeps it dynamic).

    ``quantized_activations`` (int8/int16x8 modes) applies ``rewrites.int8``: tanh-GELU and clamped
    attention-mask constants, so the encoder's graph has integer kernels and a quantizable score range.
    ``calibration`` (int8 activations) lets ``rewrites.layernorm_split`` find LayerNorm outlier channels.
    """
    from edgeq.sources.onnx.rewrites.batch_axis import lift_inputs
    from edgeq.sources.onnx.rewrites.clip_floor import clip_floors_to_max
    from edgeq.sources.onnx.rewrites.control_flow import remove_if_nodes
    from edgeq.sources.onnx.rewrites.names import sanitize_names
    from edgeq.sources.onnx.rewrites.erf_gelu import reorder_erf_gelu
    from edgeq.sources.onnx.to_tf import export_savedmodel, safe_name, unsupported_ops

    path = Path(path)
    model = read_onnx(path)
    original = model.SerializeToString()
    bad = unsupported_ops(model)
    if bad:
        raise ConversionError(f"{path}: onnx2tf cannot convert op(s) {', '.join(bad)}; replace them in the "
                              "model (re-export with other ops or a newer opset)")
    declared = onnx_specs(model, model.graph.input)
    onnx_in = fix_shapes(path, declared, input_shapes, batch)
    onnx_in, lifted = lift_inputs(model, declared, onnx_in)
    if lifted:  # exact (Squeeze/Unsqueeze): the lifted graph is the reference, so both take the same data
        original = model.SerializeToString()
    changed = {s.name for s, d in zip(onnx_in, declared) if s.shape != d.shape}
    onnx_out = onnx_specs(model, model.graph.output)
    rewrite = reorder_erf_gelu(model)
    floors = clip_floors_to_max(model)
    quant_notes = []
    if quantized_activations:
        from edgeq.sources.onnx.rewrites.int8 import rewrite_for_quantization

        quant_notes = rewrite_for_quantization(model).notes()
        if calibration is not None:
            from edgeq.sources.onnx.rewrites.layernorm_split import split_with_calibration

            quant_notes += split_with_calibration(model, calibration, [s.name for s in onnx_in],
                                                  {s.name: s.dtype for s in onnx_in})
    renamed = sanitize_names(model)  # after the rewrites: they and the user's --input-shape use ONNX names
    _set_input_dims(model, onnx_in, changed, renamed)
    control = remove_if_nodes(model, _probe_feeds(onnx_in, renamed))
    control_notes = control.notes() + _lift_note(lifted) + (
        [f"{floors} Clip(x, c > 0, inf) written as Relu(x - c) + c (onnx2tf drops the floor)"] if floors else [])
    overwrite = [f"{renamed.get(s.name, s.name)}:{','.join('1' if d is None else str(d) for d in s.shape)}"
                 for s in onnx_in if s.name in changed]
    tmp = Path(tempfile.mkdtemp(prefix="edgeq-onnx-"))
    in_names = [safe_name(s.name) for s in onnx_in]
    out_names = [safe_name(s.name) for s in onnx_out]
    try:
        try:
            keras_model, how = _faithful_keras(model, original, path, tmp, onnx_in, overwrite, fidelity_tolerance,
                                               renamed)
            if len(keras_model.inputs) != len(in_names) or len(keras_model.outputs) != len(out_names):
                raise ConversionError(f"{path}: onnx2tf's graph has {len(keras_model.inputs)} inputs and "
                                      f"{len(keras_model.outputs)} outputs, the ONNX model {len(in_names)} and "
                                      f"{len(out_names)}; cannot map them")
            saved = tmp / "saved_model"
            export_savedmodel(keras_model, in_names, out_names, saved)
        except Exception as exc:  # noqa: BLE001 - any failure of the TF graph route: try the flatbuffer route
            if isinstance(exc, ModelLoadError):
                raise
            fm = _from_direct_tflite(model, original, path, tmp, onnx_in, onnx_out, renamed, exc,
                                     fidelity_tolerance)
            fm.notes += control_notes + quant_notes
            return fm
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shape_of = lambda t: tuple(None if d is None else int(d) for d in t.shape)  # noqa: E731
    tf_in = [TensorSpec(n, shape_of(t), onnx_in[i].dtype) for i, (n, t) in enumerate(zip(in_names, keras_model.inputs))]
    # Outputs in sorted-name order: the order TFLite signature outputs are read in (runtime.TFLiteRunner).
    order = sorted(range(len(out_names)), key=lambda i: out_names[i])
    tf_out = [TensorSpec(out_names[i], shape_of(keras_model.outputs[i]), "float32") for i in order]
    predict = make_predict(original, onnx_in, tf_in, tf_out, [onnx_out[i].name for i in order])
    notes = ([how] if how else []) + control_notes
    moved = [s.name for s, t in zip(onnx_in, tf_in)
             if len(s.shape) >= 3 and s.shape[1:] != t.shape[1:] and _fits(_channel_last(s.shape), t.shape)]
    if moved:
        notes.append(f"ONNX input(s) {', '.join(moved)} are channel-first; the TFLite model takes them "
                     "channel-last (NHWC)")
    notes += quant_notes
    if quant_notes:  # the Erf-GELU notes below would describe Erf nodes that are gone
        pass
    elif rewrite.gelu and "flatbuffer_direct" in how:
        notes.append(f"{rewrite.gelu} Erf-GELU pattern(s): onnx2tf's direct backend lowers Erf to builtin ops")
    elif rewrite.gelu:
        notes.append(f"{rewrite.gelu} Erf-GELU pattern(s) reordered so LiteRT fuses them into its builtin GELU")
    if rewrite.other_erf:
        notes.append(f"{rewrite.other_erf} Erf op(s) outside GELU patterns remain (may need Flex ops)")
    fm = FloatModel(source=path, kind="onnx", saved_model_dir=saved, inputs=tf_in, outputs=tf_out,
                    _predict=predict, notes=notes, _tmpdir=tmp)
    fm.extra.update({"onnx_inputs": onnx_in, "gelu_rewrites": rewrite.gelu,
                     "check_float": _float_checker(fm, fidelity_tolerance)})

    def flatbuffer_fallback(cause: Exception) -> FloatModel:
        """TFLiteConverter refused onnx2tf's TF graph (e.g. a tf.SplitV it cannot lower): use onnx2tf's own
        float .tflite instead; the new FloatModel takes over the temporary folder."""
        fm._tmpdir = None  # noqa: SLF001 - ownership moves to the new model
        try:
            alt = _from_direct_tflite(model, original, path, tmp, onnx_in, onnx_out, renamed, cause,
                                      fidelity_tolerance)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        alt.notes += control_notes + quant_notes
        return alt

    fm.extra["flatbuffer_fallback"] = flatbuffer_fallback
    return fm


def _bare(message: str, where) -> str:
    """An inner error's text without its own 'PATH: ' prefix and '(rerun with --debug ...)' tail."""
    import re

    message = message.removeprefix(f"{where}: ")
    return re.sub(r"\s*\(rerun with --debug[^)]*\)?$", "", message).strip()


def _from_direct_tflite(model, original: bytes, path: Path, tmp: Path, onnx_in: list[TensorSpec],
                        onnx_out: list[TensorSpec], renamed: dict[str, str], cause: Exception,
                        tolerance: float) -> FloatModel:
    """onnx2tf's own float .tflite as the float model, when no TensorFlow graph could be had (``cause``).

    Every mode is then made from that flatbuffer; the reference stays onnxruntime on the original file,
    and the pipeline's fidelity check refuses the flatbuffer if it disagrees with it."""
    from edgeq.sources.onnx.to_tf import run_onnx2tf_direct_tflite, safe_name
    from edgeq.sources.tflite import float_tflite_model

    try:
        content = run_onnx2tf_direct_tflite(model, path, tmp)
    except ConversionError:
        if isinstance(cause, ConversionError):
            raise cause from None
        raise ConversionError(f"{path}: onnx2tf's TensorFlow graph failed ({type(cause).__name__}: "
                              f"{first_line(cause)[:200]}) and its flatbuffer_direct backend too; "
                              "rerun with --debug for the log") from cause
    why = _bare(first_line(cause), path)[:120]
    fm = float_tflite_model(content, path, kind="onnx", tmpdir=tmp, notes=[
        f"float model from onnx2tf's flatbuffer_direct .tflite (its TensorFlow graph failed: {why}); "
        "every mode quantizes that flatbuffer"])
    try:  # onnx2tf's flatbuffer can be malformed too (silero-vad: a weight without data)
        fm.predict(synthetic_inputs(fm.inputs, n=1))
    except Exception as exc:  # noqa: BLE001 - both routes failed: say both, in one line
        fm._tmpdir = None  # noqa: SLF001 - the caller removes tmp
        raise ConversionError(f"{path}: onnx2tf cannot convert this model: its TensorFlow graph failed ({why}) "
                              f"and its flatbuffer_direct .tflite does not run ({_bare(first_line(exc), '<converted model>')[:100]}); "
                              "simplify or re-export the ONNX model (e.g. a static-shape export)") from exc
    keys = {}
    for o in onnx_in + onnx_out:
        for k in (o.name, renamed.get(o.name, o.name), safe_name(o.name), safe_name(renamed.get(o.name, o.name))):
            keys.setdefault(k, o.name)
    def onnx_name(tf_name: str, pool: list[TensorSpec], i: int) -> str:
        return keys.get(tf_name, pool[i].name if i < len(pool) else tf_name)
    if len(fm.inputs) != len(onnx_in) or len(fm.outputs) != len(onnx_out):
        raise ConversionError(f"{path}: onnx2tf's flatbuffer has {len(fm.inputs)} inputs and {len(fm.outputs)} "
                              f"outputs, the ONNX model {len(onnx_in)} and {len(onnx_out)}; cannot map them")
    by_name = {s.name: s for s in onnx_in}
    ordered_in = [by_name.get(onnx_name(t.name, onnx_in, i), onnx_in[i]) for i, t in enumerate(fm.inputs)]
    fm.inputs = [TensorSpec(t.name, t.shape, o.dtype) for t, o in zip(fm.inputs, ordered_in)]
    out_order = [onnx_name(t.name, onnx_out, i) for i, t in enumerate(fm.outputs)]
    fm._predict = make_predict(original, ordered_in, fm.inputs, fm.outputs, out_order)  # noqa: SLF001
    fm.extra.update({"onnx_inputs": ordered_in, "gelu_rewrites": 0, "check_float": _float_checker(fm, tolerance)})
    return fm


def _keras_error(keras_model, session, onnx_in: list[TensorSpec]) -> float:
    """Relative max error of onnx2tf's graph against onnxruntime on two synthetic samples."""
    feeds = synthetic_inputs([TensorSpec(s.name, s.shape, s.dtype) for s in onnx_in], n=1, seed=1)
    ref = session.run(None, feeds)
    tf_feeds = []
    for s, t in zip(onnx_in, keras_model.inputs):
        x = feeds[s.name]
        if x.ndim >= 3 and tuple(x.shape[1:]) != tuple(t.shape[1:]):
            x = np.moveaxis(x, 1, -1)
        tf_feeds.append(x)
    got = keras_model(tf_feeds if len(tf_feeds) > 1 else tf_feeds[0])
    got = got if isinstance(got, (list, tuple)) else [got]
    try:  # sorted values: a check that does not depend on where onnx2tf put the channel axis
        o = np.concatenate([np.sort(np.asarray(a, np.float64).ravel()) for a in got])
        r = np.concatenate([np.sort(np.asarray(a, np.float64).ravel()) for a in ref])
    except ValueError:
        return float("inf")
    if r.shape != o.shape:
        return float("inf")
    return float(np.max(np.abs(r - o)) / (np.max(np.abs(r)) or 1.0))


def _faithful_keras(model, original: bytes, path: Path, tmp: Path, onnx_in, overwrite, tolerance: float,
                    renamed: dict[str, str]):
    """The first of onnx2tf's float graphs that agrees with onnxruntime (synthetic inputs).

    Candidates: tf_converter without onnxsim, with onnxsim, and the ``flatbuffer_direct`` backend's
    SavedModel. Models without channel-first (rank >= 3) float inputs, e.g. token-id encoders, try the
    direct backend first: tf_converter's NCHW->NHWC heuristics transpose their [batch, tokens, hidden]
    tensors and give a wrong graph. Image models keep tf_converter first (NHWC inputs, as TFLite wants).
    """
    from edgeq.sources.onnx.to_tf import run_onnx2tf, run_onnx2tf_direct

    session = ort_session(original, path)
    in_names = [renamed.get(s.name, s.name) for s in onnx_in]
    out_names = [o.name for o in model.graph.output]
    tf_conv = [(f"tf_converter{' + onnxsim' if sim else ''}",
                lambda sim=sim: run_onnx2tf(model, path, tmp, overwrite, onnxsim=sim)) for sim in (False, True)]
    direct = [("flatbuffer_direct", lambda: run_onnx2tf_direct(model, path, tmp, in_names, out_names))]
    images = any(len(s.shape) >= 3 and np.dtype(s.dtype).kind == "f" for s in onnx_in)
    candidates = tf_conv + direct if images else direct + tf_conv
    fallback, failure, tried = None, None, []
    for i, (name, build) in enumerate(candidates):
        try:
            km = build()
        except ConversionError as exc:
            failure = failure or exc
            tried.append(f"{name}: failed")
            continue
        err = _keras_error(km, session, onnx_in)
        if err <= tolerance:
            note = f"float graph from onnx2tf {name}" + (f" ({'; '.join(tried)})" if tried else "")
            return km, (note if name != "tf_converter" else "")
        tried.append(f"{name}: relative error {err:.3g}")
        fallback = fallback or km
    if fallback is None:
        raise failure
    return fallback, ""  # the pipeline's fidelity check reports the disagreement, with numbers


def _float_checker(fm: FloatModel, tolerance: float):
    """The pipeline calls this with its FP32 TFLite and the calibration (or eval) data, if any."""

    def check(float_tflite: bytes, dataset=None, what: str = "calibration") -> dict:
        if dataset is not None:
            feeds = dataset.inputs
        else:
            feeds, what = synthetic_inputs(fm.inputs), "synthetic"
        fid = check_fidelity(float_tflite, fm.predict, feeds, str(fm.source), what, tolerance)
        fm.extra["fidelity"] = fid
        return fid.to_dict()

    return check
