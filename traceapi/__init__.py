"""traceapi: the HTTP API of agritrace (registry now; scan pages, log and bundles later)."""

from traceapi.app import create_app

__all__ = ["create_app"]
