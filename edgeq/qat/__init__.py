"""Quantization-aware fine-tuning for Keras 3 models, exported as real full-INT8 TFLite models."""
