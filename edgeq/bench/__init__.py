"""Benchmarks: host runs with ai-edge-litert, LiteRT benchmark_model output parsing, comparison reports."""
