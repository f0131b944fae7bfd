"""Exact flatbuffer rewrites applied to converted models (each one module, each idempotent)."""
