"""compose.yaml, the Dockerfile and deploy/mosquitto.conf agree with each other and the CLI.

Without a Docker daemon CI cannot start the stack, so this checks its structure: the services
issue 8 asks for, every ``agritrace`` command line parses with the real CLI parser, every
``AGRITRACE_*`` variable is a setting, references between services and volumes resolve, and
the broker config matches what ``agritrace broker-auth`` writes. Where a Docker client with
compose exists, .ci/run also has ``docker compose config`` check the file.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from agritrace.cli import _parser
from tracecore.settings import Settings

ROOT: Final = Path(__file__).resolve().parents[1]
COMPOSE: Final = ROOT / "compose.yaml"
AGRITRACE_SERVICES: Final = {
    "init",
    "ingest-1",
    "ingest-2",
    "traceapi",
    "witness-1",
    "witness-2",
    "simulator",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml, with YAML anchors and merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _commands(service: dict[str, Any]) -> list[list[str]]:
    """The agritrace command lines a service runs (directly, or inside its ``sh -c`` script)."""
    command = service["command"]
    if service.get("entrypoint", ["agritrace"]) == ["agritrace"]:
        # compose fills ${NAME:-default} from the environment: the default is what runs.
        return [[re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", arg) for arg in command]]
    # A script replaces the image's entrypoint with the shell (otherwise `agritrace sh` runs).
    assert service["entrypoint"] == ["sh", "-ec"]
    (script,) = command
    lines = []
    for raw in script.splitlines():
        if raw.strip().startswith("#"):
            continue
        # Other command substitutions are values; agritrace's own ones are commands too.
        line = re.sub(r"\$\$\((?!agritrace )[^)]*\)", "VALUE", raw).replace("$$n", "1")
        lines.extend(
            shlex.split(found.group(1)) for found in re.finditer(r"\bagritrace\s+([^|>)\n]*)", line)
        )
    return lines


def test_the_services_of_a_province(compose: dict[str, Any]) -> None:
    """mosquitto, PostgreSQL, two ingest workers, the API, two witnesses, the simulator, init."""
    services = compose["services"]
    assert set(services) == AGRITRACE_SERVICES | {"postgres", "mosquitto"}
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    for name in AGRITRACE_SERVICES:
        assert services[name]["image"] == "agritrace:latest", name
        assert services[name]["build"] == ".", name
    for name in ("postgres", "mosquitto", "traceapi", "witness-1", "witness-2"):
        assert "healthcheck" in services[name], name


def test_every_agritrace_command_parses_with_the_cli(compose: dict[str, Any]) -> None:
    """Each command line (init's script included) is one the real argument parser accepts."""
    parser = _parser()
    seen: set[str] = set()
    for name in AGRITRACE_SERVICES:
        commands = _commands(compose["services"][name])
        assert commands, name
        for argv in commands:
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # argparse's way of refusing
                raise AssertionError(f"{name}: agritrace {shlex.join(argv)}") from exc
            seen.add(argv[0])
            assert callable(args.command)
    assert {"migrate", "keys", "broker-auth", "ingest", "api", "witness", "sim"} <= seen


def test_environment_names_real_settings(compose: dict[str, Any]) -> None:
    """Every AGRITRACE_* variable set in the file or its scripts is a setting of the services."""
    fields = {f"AGRITRACE_{name.upper()}" for name in Settings.model_fields}
    names = set(re.findall(r"AGRITRACE_[A-Z_]+", COMPOSE.read_text()))
    names.discard("AGRITRACE_ADMIN_TOKEN")  # the host's variable, and a setting too
    assert names <= fields, names - fields
    for name in AGRITRACE_SERVICES:
        environment = compose["services"][name]["environment"]
        assert environment["AGRITRACE_DB_URL"].startswith("postgresql+psycopg://")


def test_two_ingest_workers_share_one_subscription(compose: dict[str, Any]) -> None:
    """Both workers subscribe shared, each with its own persistent session id."""
    workers = [compose["services"][n] for n in ("ingest-1", "ingest-2")]
    assert all(w["environment"]["AGRITRACE_INGEST_SHARED"] == "true" for w in workers)
    ids = {w["environment"]["AGRITRACE_INGEST_CLIENT_ID"] for w in workers}
    assert len(ids) == 2
    assert all(["ingest"] in _commands(w) for w in workers)


def test_references_resolve(compose: dict[str, Any]) -> None:
    """depends_on names services; named volumes are declared; bind mounts exist."""
    services, volumes = compose["services"], set(compose["volumes"])
    for name, service in services.items():
        for other in service.get("depends_on", {}):
            assert other in services, (name, other)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)


def test_broker_config_matches_broker_auth(compose: dict[str, Any]) -> None:
    """mosquitto: no anonymous login, the files broker-auth writes, persistence, raised queues."""
    mount = next(
        m for m in compose["services"]["mosquitto"]["volumes"] if m.startswith("./deploy/")
    )
    conf = dict(
        line.split(None, 1)
        for line in (ROOT / mount.split(":")[0]).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert conf["allow_anonymous"] == "false"
    assert conf["password_file"] == "/config/passwd"
    assert conf["acl_file"] == "/config/acl"
    assert conf["persistence"] == "true"
    assert int(conf["max_queued_messages"]) >= 100_000
    script = compose["services"]["init"]["command"][-1]
    assert "agritrace broker-auth --out /config" in script
    (simulator,) = _commands(compose["services"]["simulator"])
    assert simulator[simulator.index("--broker-passwords") + 1] == "/config/passwords"
    # The gateways the broker knows are the simulator's: its scenario and farm count.
    (auth,) = [c for c in _commands(compose["services"]["init"]) if c[0] == "broker-auth"]
    parser = _parser()
    auth_args, sim_args = parser.parse_args(auth), parser.parse_args(simulator)
    assert sim_args.scenario in auth_args.scenario
    assert sim_args.farms <= auth_args.farms


def test_dockerfile_installs_every_package() -> None:
    """The image copies every package pyproject.toml installs, and runs agritrace."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert include is not None
    packages = {p.strip(' "*') for p in include.group(1).split(",")}
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, re.MULTILINE))
    assert packages <= copied, packages - copied
    assert 'ENTRYPOINT ["agritrace"]' in dockerfile
    # The public base by default; deploy/compose.local.yaml passes a local Debian 12 one.
    assert "ARG BASE=python:3.11" in dockerfile
    assert "FROM ${BASE}" in dockerfile
