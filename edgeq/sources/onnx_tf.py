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

from edgeq.errors import ConversionError
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


def run_onnx2tf(model, source: Path, work: Path, overwrite_shapes: list[str] | None, onnxsim: bool = False):
    """Convert the (already validated, possibly rewritten) ONNX ``model``; returns onnx2tf's tf_keras model.

    ``onnxsim=False`` skips onnx2tf's onnxsim pass: on a PyTorch-exported encoder, onnx2tf 2.6.9 produced
    a wrong float graph (relative error 0.38) only after onnxsim, and a right one without it.
    """
    from edgeq.tfenv import quiet_tf

    quiet_tf()
    out = io.StringIO()
    scratch = Path(tempfile.mkdtemp(prefix="onnx2tf-", dir=work))
    try:
        with quiet_native_output(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), \
                _venv_bin_on_path(), _private_cwd(scratch):
            import onnx
            import onnx2tf

            # A private copy: onnx2tf's onnxsim step rewrites the file it is given, in place.
            copy = scratch / "model.onnx"
            onnx.save(model, str(copy))
            keras_model = onnx2tf.convert(
                input_onnx_file_path=str(copy), output_folder_path=str(scratch / "out"),
                tflite_backend="tf_converter",
                disable_model_save=True, overwrite_input_shape=overwrite_shapes or None, not_use_onnxsim=not onnxsim,
                non_verbose=True, verbosity="error")
    except SystemExit as exc:  # onnx2tf reports failures with sys.exit(1) after logging them
        raise ConversionError(f"{source}: onnx2tf could not convert the model: {_first_error(out.getvalue())} "
                              "(rerun with --debug for its log)") from exc
    except Exception as exc:
        raise ConversionError(f"{source}: onnx2tf failed: {type(exc).__name__}: {str(exc).strip()[:200]} "
                              "(rerun with --debug for its log)") from exc
    if keras_model is None:
        raise ConversionError(f"{source}: onnx2tf produced no model: {_first_error(out.getvalue())}")
    return keras_model


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
    holder.model = keras_model
    with quiet_native_output(), contextlib.redirect_stdout(io.StringIO()):
        tf.saved_model.save(holder, str(path), signatures={"serving_default": serve.get_concrete_function()})
