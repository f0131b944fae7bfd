"""ONNX graph rewrites applied before onnx2tf: each one module, each reporting what it changed."""
