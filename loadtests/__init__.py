"""Locust load tests (run headless; see docs/benchmarks.md and loadtests/scan.py)."""
