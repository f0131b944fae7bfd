"""ONNX models as a source: ``load`` (check, rewrite, onnx2tf, the float model), ``to_tf`` (running onnx2tf),
``fidelity`` (the float TFLite against onnxruntime) and ``rewrites/`` (graph edits before onnx2tf)."""
from edgeq.sources.onnx.load import load_onnx

__all__ = ["load_onnx"]
