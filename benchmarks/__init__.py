"""Benchmark scripts (run as ``python -m benchmarks.<name>``); each prints a table."""
