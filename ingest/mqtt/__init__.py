"""Ingest's own MQTT client: MQTT 5 and 3.1.1, acknowledgements after commit (docs/ingest.md)."""
