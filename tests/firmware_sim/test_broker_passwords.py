"""sim run --broker-passwords: each party's gateway logs in as gw-PARTY with its own password."""

from __future__ import annotations

from pathlib import Path

import pytest

from agritrace.mosquitto import write_broker_auth
from firmware_sim.sim import SimOptions
from tracecore.errors import ConfigError
from tracecore.mqtt import BrokerAddress


def _options(tmp_path: Path, passwords: Path | None) -> SimOptions:
    return SimOptions(
        scenario="egg",
        api="http://127.0.0.1:8000",
        broker=BrokerAddress("mosquitto", 1883),
        data_dir=tmp_path,
        admin_token=None,
        broker_passwords=passwords,
    )


def test_each_party_connects_as_its_gateway(tmp_path: Path) -> None:
    """The password broker-auth wrote for gw-PARTY is the one PARTY's fleet logs in with."""
    written = write_broker_auth(tmp_path / "broker", {"farm-a": ["dev-aaa"]})
    address = _options(tmp_path, tmp_path / "broker" / "passwords").broker_for("farm-a")
    assert (address.host, address.port) == ("mosquitto", 1883)
    assert address.username == "gw-farm-a"
    assert address.password == written["gw-farm-a"]
    assert "gw-farm-a@" in str(address)
    assert written["gw-farm-a"] not in str(address)  # never printed


def test_without_passwords_every_party_shares_the_broker_url(tmp_path: Path) -> None:
    """No --broker-passwords: the --broker URL as given (its user, if any)."""
    options = _options(tmp_path, None)
    assert options.broker_for("farm-a") == options.broker


def test_a_party_without_a_password_is_a_clear_error(tmp_path: Path) -> None:
    """A gateway broker-auth did not cover fails before connecting, naming the user."""
    write_broker_auth(tmp_path / "broker", {"farm-a": ["dev-aaa"]})
    with pytest.raises(ConfigError, match="no MQTT password for gw-farm-b"):
        _options(tmp_path, tmp_path / "broker" / "passwords").broker_for("farm-b")
