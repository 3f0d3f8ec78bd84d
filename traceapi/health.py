"""Health of the services in a process: ``/healthz`` problems and ``/metrics`` lines.

Shared by the API (which reports an ingest service of the same process, ``agritrace serve``) and
the small health server of a stand-alone ``agritrace ingest`` (``AGRITRACE_INGEST_HEALTH_PORT``;
docs/operations.md, "Health checks").
"""

from __future__ import annotations

import time
from typing import Final

from fastapi import FastAPI, status
from fastapi.responses import JSONResponse, PlainTextResponse

from traceapi.availability import RETRY_AFTER_S, IngestState
from traceapi.schemas import StatusOut

__all__ = [
    "DB_UP_HELP",
    "EXPOSITION",
    "create_health_app",
    "health_response",
    "ingest_metrics",
    "ingest_problems",
    "metric_lines",
]

EXPOSITION: Final = "text/plain; version=0.0.4; charset=utf-8"
DB_UP_HELP: Final = "1 when this process's last query of the database succeeded."


def ingest_metrics(state: IngestState | None) -> list[str]:
    """The gauges and counters of an ingest service in this process (none for ``None``)."""
    if state is None:
        return []
    now_ms = time.time_ns() // 1_000_000
    down_s = (
        (now_ms - state.database_down_since_ms) / 1000
        if state.database_down_since_ms is not None
        else 0.0
    )
    return [
        *metric_lines(
            "agritrace_ingest_database_up",
            "gauge",
            "1 while ingest can commit batches.",
            int(state.database_up),
        ),
        *metric_lines(
            "agritrace_ingest_database_down_seconds",
            "gauge",
            "How long the current database outage has lasted (0 when up).",
            down_s,
        ),
        *metric_lines(
            "agritrace_ingest_database_outages_total",
            "counter",
            "Database outages ingest has ridden out.",
            state.database_outages,
        ),
        *metric_lines(
            "agritrace_ingest_broker_connected",
            "gauge",
            "1 while ingest is connected to the MQTT broker.",
            int(state.broker_connected),
        ),
        *metric_lines(
            "agritrace_ingest_received_total", "counter", "Messages received.", state.received
        ),
        *metric_lines(
            "agritrace_ingest_accepted_total", "counter", "Messages committed.", state.accepted
        ),
        *metric_lines(
            "agritrace_ingest_duplicates_total",
            "counter",
            "Resent messages answered with their stored receipt.",
            state.duplicates,
        ),
        *metric_lines(
            "agritrace_ingest_receipts_published_total",
            "counter",
            "Receipts published.",
            state.receipts_published,
        ),
    ]


def metric_lines(name: str, kind: str, help_text: str, value: float) -> list[str]:
    """One sample with its HELP and TYPE lines."""
    # Prometheus text exposition format 0.0.4: HELP, TYPE, then the sample.
    sample = str(value) if isinstance(value, int) else f"{value:.3f}"
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {sample}"]


def ingest_problems(state: IngestState | None) -> list[str]:
    """What keeps an ingest service from working now, in words (empty: nothing)."""
    if state is None:
        return []
    problems = []
    if not state.database_up:
        problems.append("ingest cannot commit: the database is unavailable")
    if not state.broker_connected:
        problems.append("ingest is not connected to the MQTT broker")
    return problems


def health_response(problems: list[str]) -> JSONResponse:
    """``/healthz``'s answer: 200 ok, or 503 with Retry-After naming the problems."""
    body = StatusOut(status="unavailable" if problems else "ok", problems=problems)
    return JSONResponse(
        body.model_dump(),
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE if problems else status.HTTP_200_OK,
        headers={"Retry-After": str(RETRY_AFTER_S)} if problems else None,
    )


def create_health_app(state: IngestState) -> FastAPI:
    """``/healthz`` and ``/metrics`` of a stand-alone ingest service, from its counters only."""
    app = FastAPI(title="agritrace ingest health", docs_url=None, redoc_url=None)

    @app.get("/healthz", responses={503: {"model": StatusOut}})
    def healthz() -> JSONResponse:
        """Report ok while ingest can commit and is connected to the broker."""
        return health_response(ingest_problems(state))

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus metrics of this ingest process."""
        return PlainTextResponse("\n".join(ingest_metrics(state)) + "\n", media_type=EXPOSITION)

    return app
