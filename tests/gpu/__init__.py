"""Tests that need a CUDA GPU: skipped, with reason "no CUDA GPU", everywhere else.

A package (unlike tests/ itself), so that its module names cannot clash with the
CPU tests' (pytest imports them as gpu.test_*). Run on a GPU machine with
`bash benchmarks/gpu_check.sh`, or `python -m pytest tests/gpu -q`.
"""
