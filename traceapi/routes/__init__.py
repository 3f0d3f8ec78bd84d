"""Routers of the trace API."""

from traceapi.routes.registry import router as registry_router

__all__ = ["registry_router"]
