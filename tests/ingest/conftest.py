"""Fixtures of the ingest tests: a log key and a world of parties and devices on each engine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingest_kit import HOUR, World, seed
from sqlalchemy import Engine

from ingest import IngestConfig, Processor
from tracecore.keys import SignerKey


@pytest.fixture
def log_key() -> SignerKey:
    """The log's signing key (fixed seed)."""
    return SignerKey("agritrace-test-log", seed("log"))


@pytest.fixture
def world(engine: Engine, log_key: SignerKey) -> Iterator[World]:
    """A world with parties ``farm-a``, ``packer-b``, ``shop-c`` and one device each."""
    processor = Processor(engine, log_key, IngestConfig(park_ms=24 * HOUR))
    w = World(engine=engine, log_key=log_key, processor=processor)
    for party, kind in (("farm-a", "farm"), ("packer-b", "packer"), ("shop-c", "retailer")):
        w.party(party, kind)
    w.device("dev-a", "farm-a")
    w.device("dev-b", "packer-b")
    w.device("dev-c", "shop-c")
    yield w
    processor.close()
