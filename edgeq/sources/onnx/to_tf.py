"""Run onnx2tf for one thing only: the float TF graph of an ONNX model, exported as a SavedModel.

onnx2tf's own TFLite writing and quantization are not used (``disable_model_save``): edgeq's one
pipeline converts and quantizes the SavedModel. onnx2tf runs in a private temporary working
directory (it writes scratch files into the current directory) with its console output captured,
and the venv's ``bin/`` on PATH because it starts ``onnxsim`` as a subprocess.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import sys
import tempfile
from pathlib import Path

from edgeq.errors import ConversionError, first_line
from edgeq.nativeio import quiet_native_output


def unsupported_ops(model) -> list[str]:
    """ONNX op types in ``model`` (main graph) that onnx2tf has no converter module for."""
    types = sorted({n.op_type for n in model.graph.node})
    return [t for t in types if importlib.util.find_spec(f"onnx2tf.ops.{t}") is None]


def safe_name(name: str) -> str:
    """A TensorFlow-safe signature name for an ONNX tensor name (``input.1`` -> ``input_1``)."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return s if s and (s[0].isalpha()) else f"t_{s}"


@contextlib.contextmanager
def _private_cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _venv_bin_on_path():
    old = os.environ.get("PATH", "")
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + old if bindir not in old.split(os.pathsep) else old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _first_error(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "ERROR" in ln or "Error" in ln:
            return ln[:240]
    return (lines[-1] if lines else "no message")[:240]


@contextlib.contextmanager
def _onnx2tf_run(model, source: Path, work: Path, backend: str):
    """Run onnx2tf quietly in a private folder on a private copy of ``model``; yields (copy, out folder, log).

    A private copy because onnx2tf's onnxsim step rewrites the file it is given, in place. onnx2tf reports
    failures with sys.exit(1) after logging them: both that and exceptions become one-line ConversionErrors.
    """
    from edgeq.tfenv import quiet_tf

    quiet_tf()
    log = io.StringIO()
    scratch = Path(tempfile.mkdtemp(prefix=f"onnx2tf-{backend}-", dir=work))
    label = "onnx2tf" if backend == "tf_converter" else f"onnx2tf ({backend})"
    try:
        with quiet_native_output(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), \
                _venv_bin_on_path(), _private_cwd(scratch):
            import onnx

            copy = scratch / "model.onnx"
            onnx.save(model, str(copy))
            yield copy, scratch / "out", log
    except ConversionError:
        raise
    except SystemExit as exc:
        raise ConversionError(f"{source}: {label} could not convert the model: {_first_error(log.getvalue())} "
                              "(rerun with --debug for its log)") from exc
    except Exception as exc:
        raise ConversionError(f"{source}: {label} failed: {type(exc).__name__}: {first_line(exc)[:240]} "
                              "(rerun with --debug for its log)") from exc


def run_onnx2tf(model, source: Path, work: Path, overwrite_shapes: list[str] | None, onnxsim: bool = False):
    """Convert the (already validated, possibly rewritten) ONNX ``model``; returns onnx2tf's tf_keras model.

    ``onnxsim=False`` skips onnx2tf's onnxsim pass: on a PyTorch-exported encoder, onnx2tf 2.6.9 produced
    a wrong float graph (relative error 0.38) only after onnxsim, and a right one without it.
    """
    with _onnx2tf_run(model, source, work, "tf_converter") as (copy, out, log):
        import onnx2tf

        keras_model = onnx2tf.convert(
            input_onnx_file_path=str(copy), output_folder_path=str(out), tflite_backend="tf_converter",
            disable_model_save=True, overwrite_input_shape=overwrite_shapes or None, not_use_onnxsim=not onnxsim,
            non_verbose=True, verbosity="error")
    if keras_model is None:
        raise ConversionError(f"{source}: onnx2tf produced no model: {_first_error(log.getvalue())}")
    return keras_model


class SignatureGraph:
    """onnx2tf's ``flatbuffer_direct`` SavedModel seen like a Keras model: ``inputs``, call on a list.

    Inputs and outputs are in the ONNX graph's order (the signature itself is keyed by name).
    """

    def __init__(self, loaded, in_names: list[str], out_names: list[str]):
        self.trackable = loaded
        self._fn = loaded.signatures["serving_default"]
        specs = self._fn.structured_input_signature[1]
        self._in = [_match(specs, n) for n in in_names]
        self.inputs = [specs[k] for k in self._in]
        outs = self._fn.structured_outputs
        self._out = [_match(outs, n) for n in out_names]
        self.outputs = [outs[k] for k in self._out]

    def __call__(self, args):
        args = args if isinstance(args, (list, tuple)) else [args]
        res = self._fn(**{k: a for k, a in zip(self._in, args)})
        return [res[k] for k in self._out]


def _match(named: dict, onnx_name: str) -> str:
    for key in (onnx_name, safe_name(onnx_name)):
        if key in named:
            return key
    raise ConversionError(f"onnx2tf's direct graph has no tensor named '{onnx_name}' (it has "
                          f"{', '.join(sorted(named))})")


def run_onnx2tf_direct(model, source: Path, work: Path, in_names: list[str], out_names: list[str]):
    """The float graph through onnx2tf's ``flatbuffer_direct`` backend, as a ``SignatureGraph``.

    That backend lowers ONNX ops one by one without the tf_converter path's NCHW->NHWC layout
    heuristics, which transpose the 3-D [batch, tokens, hidden] tensors of transformer encoders (on
    ``tiny_encoder`` the tf_converter graph is off by a relative 0.19-0.37; this one by 2e-7). Its
    SavedModel (``flatbuffer_direct_output_saved_model``) feeds edgeq's one pipeline; onnx2tf's own
    .tflite files from this run are ignored.
    """
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    with _onnx2tf_run(model, source, work, "flatbuffer_direct") as (copy, out, log):
        import onnx2tf

        onnx2tf.convert(input_onnx_file_path=str(copy), output_folder_path=str(out),
                        tflite_backend="flatbuffer_direct", flatbuffer_direct_output_saved_model=True,
                        not_use_onnxsim=False, non_verbose=True, verbosity="error")
        if not (out / "saved_model.pb").exists():
            raise ConversionError(f"{source}: onnx2tf (flatbuffer_direct) wrote no SavedModel: "
                                  f"{_first_error(log.getvalue())}")
        loaded = tf.saved_model.load(str(out))
    return SignatureGraph(loaded, in_names, out_names)


def run_onnx2tf_direct_tflite(model, source: Path, work: Path) -> bytes:
    """onnx2tf's ``flatbuffer_direct`` float32 .tflite itself: edgeq's last resort when no TensorFlow graph
    of the model can be had (the graph fails to build or to export); the pipeline then quantizes the
    flatbuffer directly."""
    with _onnx2tf_run(model, source, work, "flatbuffer_direct") as (copy, out, log):
        import onnx2tf

        onnx2tf.convert(input_onnx_file_path=str(copy), output_folder_path=str(out),
                        tflite_backend="flatbuffer_direct", not_use_onnxsim=False, non_verbose=True,
                        verbosity="error")
        found = sorted(out.glob("*_float32.tflite")) if out.exists() else []
        if not found:
            raise ConversionError(f"{source}: onnx2tf (flatbuffer_direct) wrote no float32 .tflite: "
                                  f"{_first_error(log.getvalue())}")
        return found[0].read_bytes()


def export_savedmodel(keras_model, input_names: list[str], output_names: list[str], path: Path) -> None:
    """Write ``keras_model`` as a SavedModel whose ``serving_default`` uses the given names."""
    from edgeq.tfenv import quiet_tf

    tf = quiet_tf()
    specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(keras_model.inputs, input_names)]

    @tf.function(input_signature=specs)
    def serve(*args):
        outs = keras_model(list(args) if len(args) > 1 else args[0])
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        return {n: o for n, o in zip(output_names, outs)}

    holder = tf.Module()
    holder.model = getattr(keras_model, "trackable", keras_model)  # a SignatureGraph's variables live there
    with quiet_native_output(), contextlib.redirect_stdout(io.StringIO()):
        tf.saved_model.save(holder, str(path), signatures={"serving_default": serve.get_concrete_function()})
