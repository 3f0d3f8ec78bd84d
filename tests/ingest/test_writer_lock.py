"""Single writer: two processors on one database never assign the same log index."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ingest_kit import RECEIVED, FakeDevice, World, product
from sqlalchemy import Engine

from ingest import IngestConfig, Processor


def test_two_processors_share_one_log_without_gaps(
    world: World, engine_factory: Callable[[], Engine]
) -> None:
    """Concurrent batches from two processors (own engines) give indexes 0..n-1, once each."""
    lot = product("SHARED")
    dev_a = world.devices["dev-a"]
    world.send(dev_a, dev_a.event("commissioning", lot))
    others: list[Engine] = [engine_factory(), engine_factory()]
    processors = [Processor(e, world.log_key, IngestConfig(verify_threads=1)) for e in others]
    devices = [world.device(f"dev-w{i}", "farm-a") for i in range(2)]
    errors: list[BaseException] = []

    def work(processor: Processor, device: FakeDevice) -> None:
        try:
            for _ in range(8):
                batch = [device.inbound(device.reading(lot)) for _ in range(15)]
                result = processor.process(batch, RECEIVED)
                assert result.accepted == 15, result
        except Exception as exc:  # noqa: BLE001  (reported to the test thread below)
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(p, d)) for p, d in zip(processors, devices, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for processor in processors:
        processor.close()
    assert errors == []
    entries = world.rows("log_entries", "index")
    assert [row.index for row in entries] == list(range(1 + 2 * 8 * 15))
    links = [r for r in world.rows("chain_links", "pseq") if r.product_key == lot]
    assert [r.pseq for r in links] == list(range(1, 2 + 2 * 8 * 15))
