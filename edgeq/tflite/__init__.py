"""TFLite flatbuffer helpers that need no interpreter."""
