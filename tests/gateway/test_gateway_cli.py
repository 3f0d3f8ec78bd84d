"""``agritrace gateway`` actions: check, event and events queue for the running gateway, rotate
asks it; the metrics endpoint serves what the status shows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gateway_kit import Farm, wait_until
from mqtt_kit import free_port
from sqlalchemy import Engine

from agritrace.cli import main
from gateway.control import take_rotation_request
from tracecore.mqtt import BrokerAddress
from tracecore.storage import make_engine, upgrade

LOT = "01/06901234567892/10/L261206"


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    """A registered gateway directory (no broker needed until it runs)."""
    engine: Engine = make_engine(f"sqlite:///{tmp_path / 'agritrace.sqlite3'}")
    upgrade(engine)
    made = Farm.make(engine, BrokerAddress("127.0.0.1", free_port()), tmp_path / "gateway")
    made.config('[[source]]\nname = "packing"\ntype = "events"\nspool = "spool"\n')
    yield made
    engine.dispose()


def test_check_says_what_would_run(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    """The identity and every source, without starting anything."""
    assert main(["gateway", "check", "--config", str(farm.directory / "gateway.toml")]) == 0
    out = capsys.readouterr().out
    assert f"device {farm.device}" in out
    assert "source packing: events" in out


def test_check_names_the_mistake(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    """A broken file: exit 1 and the line and key on stderr."""
    path = farm.directory / "gateway.toml"
    path.write_text(path.read_text(encoding="utf-8").replace('"events"', '"event"'))
    assert main(["gateway", "check", "--config", str(path)]) == 1
    assert re.search(r"line \d+, source\[1\]\.type: expected one of", capsys.readouterr().err)


def test_event_is_checked_and_queued(farm: Farm, capsys: pytest.CaptureFixture[str]) -> None:
    """A good event lands in the spool as a CSV file; a bad one is refused and nothing queued."""
    config = str(farm.directory / "gateway.toml")
    spool = farm.directory / "spool"
    argv = ["gateway", "event", "--config", config, "--step", "shipping", "--product", LOT]
    assert main([*argv, "--data", "destination=lanzhou-pack"]) == 0
    (queued,) = spool.glob("*.csv")
    assert "shipping" in queued.read_text(encoding="utf-8")
    assert "queued" in capsys.readouterr().out
    assert main([*argv[:-1], "01/6901234567892/10/L1"]) == 1
    assert "product" in capsys.readouterr().err.lower()
    assert len(list(spool.glob("*.csv"))) == 1


def test_events_refuses_a_file_with_a_bad_row(
    farm: Farm, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every bad row is named; the spool stays empty."""
    path = tmp_path / "packing.csv"
    path.write_text(f"step,products\ncommissioning,{LOT}\npacking,{LOT}/21/\n", encoding="utf-8")
    config = str(farm.directory / "gateway.toml")
    assert main(["gateway", "events", "--config", config, str(path)]) == 1
    assert "line 3" in capsys.readouterr().err
    assert not list((farm.directory / "spool").glob("*.csv"))


def test_rotate_leaves_a_request_for_the_running_gateway(farm: Farm) -> None:
    """The request is a file in the state directory, taken once."""
    assert main(["gateway", "rotate", "--config", str(farm.directory / "gateway.toml")]) == 0
    state = farm.directory / "keys"
    assert take_rotation_request(state)
    assert not take_rotation_request(state)


def test_the_metrics_endpoint(farm: Farm) -> None:
    """GET /metrics serves the status in Prometheus text; any other path is 404."""
    port = free_port()
    config = farm.config(
        '[[source]]\nname = "packing"\ntype = "events"\nspool = "spool"\n',
        gateway=f'metrics = "127.0.0.1:{port}"',
    )
    with farm.run_offline(config) as running:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(url), "the metrics endpoint")
        reply = httpx.get(f"{url}/metrics", timeout=10)
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert 'agritrace_gateway_sent_total{source="packing"} 0' in reply.text
        assert f'agritrace_gateway_connected{{device="{farm.device}"}} 0' in reply.text
        assert httpx.get(f"{url}/", timeout=10).status_code == 404
        del running


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/metrics", timeout=1)
    except httpx.HTTPError:
        return False
    return True
