"""A float ``.tflite`` file as a source: LiteRT Quantizer's starting point, and onnx2tf's fallback.

There is no TensorFlow graph behind such a model, so every mode is made from the flatbuffer itself:
fp16 and dynamic rewrite its weights, the calibrated modes run TFLite's calibrator on it (the same
second half of TFLiteConverter's post-training path that edgeq uses for every source). The float
reference is the file itself in the LiteRT interpreter.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import ModelLoadError
from edgeq.sources.base import FloatModel, TensorSpec

def _specs(details: list[dict], names: list[str]) -> list[TensorSpec]:
    out = []
    for d, n in zip(details, names):
        sig = d.get("shape_signature")
        dims = sig if sig is not None and len(sig) else d["shape"]
        shape = tuple(None if int(v) < 0 else int(v) for v in dims)
        out.append(TensorSpec(n, shape, np.dtype(d["dtype"]).name))
    return out


def float_tflite_model(content: bytes, source: Path, kind: str = "tflite", notes: list[str] | None = None,
                       tmpdir: Path | None = None) -> FloatModel:
    """A FloatModel around the float flatbuffer ``content``; refuses models that are already quantized."""
    from edgeq.modelinfo import inspect_tflite
    from edgeq.runtime import TFLiteRunner

    info = inspect_tflite(content=content)
    quantized = sorted({t.dtype for t in info.inputs + info.outputs if t.scale}
                       | ({"int8", "uint8", "int16", "float16"} & set(info.tensors_by_dtype)))
    if quantized:
        raise ModelLoadError(f"{source}: is already quantized ({', '.join(quantized)} tensors); give the float32 "
                             "model it was made from")
    runner = TFLiteRunner(content=content)
    in_names = list(runner.input_names)
    in_details = [runner.input_names[n] for n in in_names]
    inputs = _specs(in_details, in_names)
    outputs = _specs(runner._outputs, runner.output_names)  # noqa: SLF001 - signature order, as run() returns

    def predict(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return runner.run(feeds)

    fm = FloatModel(source=Path(source), kind=kind, saved_model_dir=None, inputs=inputs, outputs=outputs,
                    _predict=predict, notes=list(notes or []), _tmpdir=tmpdir)
    fm.float_tflite = content
    return fm


def load_tflite(path: Path) -> FloatModel:
    """Load a float ``.tflite`` file (exit 2 for a quantized or unreadable one)."""
    from edgeq.modelinfo import open_interpreter

    path = Path(path)
    open_interpreter(path)  # one-line errors for files that are not TFLite
    return float_tflite_model(path.read_bytes(), path)
