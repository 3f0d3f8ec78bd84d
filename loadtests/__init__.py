"""Locust load tests, run headless (docs/benchmarks.md): ``scan.py`` (buyers scanning codes,
HTML and JSON, unknown codes, QR images, and /healthz as the baseline) and ``devices.py``
(device gateways publishing signed readings over MQTT and timing their receipts)."""
