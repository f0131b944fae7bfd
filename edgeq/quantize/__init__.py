"""Quantization: one module per algorithm; ``converter`` drives TFLiteConverter for every mode."""
