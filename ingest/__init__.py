"""ingest: verify, sequence and commit device messages; receipts after the commit (issue 3)."""

from ingest.checkpointer import run_checkpointer
from ingest.processor import BatchResult, Inbound, IngestConfig, Processor
from ingest.service import (
    IngestStats,
    ServiceOptions,
    run_ingest,
    settle_garbage_collector,
    stop_on_signals,
)

__all__ = [
    "BatchResult",
    "Inbound",
    "IngestConfig",
    "IngestStats",
    "Processor",
    "ServiceOptions",
    "run_checkpointer",
    "run_ingest",
    "settle_garbage_collector",
    "stop_on_signals",
]
