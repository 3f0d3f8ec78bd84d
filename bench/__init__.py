"""Benchmarks of agritrace (scripts, not tests): python -m bench.proofs."""
