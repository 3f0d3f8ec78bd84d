"""``agritrace gateway``: run a farm's gateway, set one up, hand it batch events, rotate its key.

* ``agritrace gateway --config gateway.toml`` runs the gateway (:mod:`gateway.service`) until
  SIGTERM or SIGINT, with a status line per source on the terminal;
* ``gateway init`` sets up a gateway where there is no console yet: its key, its provisioning
  file (the log key fetched from the API) and a starting ``gateway.toml``;
* ``gateway check`` reads the configuration and the identity and says what would run;
* ``gateway event`` and ``gateway events FILE.csv`` check batch events and put them into the
  spool of the running gateway's ``events`` source;
* ``gateway rotate`` asks the running gateway to rotate its device key now.

docs/gateway.md is the user's guide.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import signal
import sys
import zoneinfo
from pathlib import Path

from tracecore.errors import AgritraceError, ConfigError
from tracecore.settings import Settings

__all__ = ["add_gateway_parser"]

_STARTER = """\
# The gateway of {device}: docs/gateway.md explains every key.
[gateway]
provisioning = "{provisioning}"
keys = "{keys}"
# broker = "mqtt://gw-yourfarm:PASSWORD@trace.example.cn:1883"   # replaces the file's broker
# status_interval = 5            # seconds between status lines; 0: none
# metrics = "127.0.0.1:9464"     # Prometheus metrics on http://127.0.0.1:9464/metrics
# rotate_every_days = 90         # rotate the device key on a schedule

# Batch events (packing, shipping): CSV files dropped into spool/ by
# `agritrace gateway events --config gateway.toml FILE.csv` or by a packing line.
[[source]]
name = "events"
type = "events"
spool = "spool"

# Temperature probes of a Tasmota device on the farm's own broker:
# [[source]]
# name = "henhouse-probes"
# type = "tasmota"
# broker = "mqtt://127.0.0.1:1883"
# topics = ["tele/henhouse1/SENSOR"]
# products = ["01/06901234567892/10/L261206"]
"""


def add_gateway_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agritrace gateway`` and its actions to the command line."""
    gateway = commands.add_parser(
        "gateway",
        help="run a farm's gateway: sensors and packing lines in, signed messages out",
        description="Run the gateway of --config until SIGTERM/SIGINT, or one of the actions.",
    )
    gateway.add_argument("--config", type=Path, help="the gateway's gateway.toml")
    gateway.set_defaults(command=_run)
    actions = gateway.add_subparsers(metavar="ACTION")

    init = actions.add_parser("init", help="set up a gateway without the console")
    init.add_argument("--device-id", required=True, help="the device id, e.g. henhouse-1")
    init.add_argument("--api", required=True, help="the service's API URL (for its log key)")
    init.add_argument("--broker", required=True, help="the service's broker URL, mqtt://...")
    init.add_argument("--dir", type=Path, required=True, help="the gateway's directory")
    init.set_defaults(command=_init)

    check = actions.add_parser("check", help="check gateway.toml and the identity, say what runs")
    check.add_argument("--config", type=Path, required=True, dest="config_")
    check.set_defaults(command=_check)

    event = actions.add_parser("event", help="queue one business event for the gateway")
    event.add_argument("--config", type=Path, required=True, dest="config_")
    event.add_argument("--source", default=None, help="the events source (if there are several)")
    event.add_argument("--step", required=True, help="CBV step: commissioning, shipping, ...")
    event.add_argument(
        "--product", action="append", required=True, help="product key (repeat; ranges allowed)"
    )
    event.add_argument("--parent", action="append", default=[], help="parent product key")
    event.add_argument("--location", default=None, help="where, e.g. 414/{gln} or a site code")
    event.add_argument("--time", default=None, help="ISO 8601 time (default: now)")
    event.add_argument(
        "--data", action="append", default=[], metavar="KEY=VALUE", help="a data field (repeat)"
    )
    event.set_defaults(command=_event)

    events = actions.add_parser("events", help="queue a CSV file of batch events for the gateway")
    events.add_argument("--config", type=Path, required=True, dest="config_")
    events.add_argument("--source", default=None, help="the events source (if there are several)")
    events.add_argument("file", type=Path, help="the CSV file (docs/gateway-csv.md)")
    events.set_defaults(command=_events)

    rotate = actions.add_parser("rotate", help="ask the running gateway to rotate its key now")
    rotate.add_argument("--config", type=Path, required=True, dest="config_")
    rotate.set_defaults(command=_rotate)


def _config_path(args: argparse.Namespace) -> Path:
    path: Path | None = getattr(args, "config_", None) or args.config
    if path is None:
        raise ConfigError("agritrace gateway needs --config gateway.toml (or an action)")
    return path


def _run(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # a gateway has its own file, nothing of a server's data directory
    from agritrace.runner import configure_logging
    from gateway.config import load_config
    from gateway.service import Gateway, run_gateway

    config = load_config(_config_path(args))
    configure_logging()

    def ready(gateway: Gateway) -> None:
        sources = ", ".join(f"{s.name} ({s.kind})" for s in config.sources)
        sys.stderr.write(
            f"gateway {gateway.device.id}: sending to {gateway.fleet.broker}, sources: "
            f"{sources}; {gateway.fleet.pending_count()} messages wait in the outbox\n"
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        status = await run_gateway(config, stop, out=sys.stderr, ready=ready)
        waiting = status.outbox_pending
        sys.stderr.write(f"gateway stopped; {waiting} messages wait in the outbox for next time\n")

    try:
        asyncio.run(main())
    except* AgritraceError as group:
        # A task's error (a source that cannot start) is reported like any other: one line.
        raise group.exceptions[0] from None
    return 0


def _init(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from agritrace.devices import fetch_provisioning
    from gateway.runtime import load_or_create_device_key
    from tracecore.keys import device_fingerprint
    from tracecore.mqtt import BrokerAddress

    broker = BrokerAddress.parse(args.broker)
    directory: Path = args.dir
    config = directory / "gateway.toml"
    provisioning = directory / f"provisioning-{args.device_id}.json"
    for path in (config, provisioning):
        if path.exists():
            raise ConfigError(f"{path} exists already: init never replaces a gateway's files")
    key = load_or_create_device_key(directory / "keys", args.device_id)
    public = key.public_key
    text = fetch_provisioning(args.api, args.device_id, public, str(broker))
    directory.mkdir(parents=True, exist_ok=True)
    provisioning.write_text(text, encoding="utf-8")
    config.write_text(
        _STARTER.format(device=args.device_id, provisioning=provisioning.name, keys="keys"),
        encoding="utf-8",
    )
    print(f"device:      {args.device_id}")
    print(f"public key:  {base64.b64encode(public).decode()}")
    print(f"fingerprint: {device_fingerprint(public)}")
    print(f"wrote {provisioning} and {config}")
    print(
        "next: have the device registered with this public key (agritrace device add, or the "
        "operator), then run: agritrace gateway --config " + str(config)
    )
    return 0


def _check(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from gateway.config import load_config
    from gateway.service import load_identity

    config = load_config(_config_path(args))
    provisioning, _ = load_identity(config.provisioning, config.keys)
    print(f"device {provisioning.device} (key {provisioning.fingerprint})")
    print(f"sends to {config.broker or provisioning.broker}; outbox in {config.state}")
    for source in config.sources:
        print(f"source {source.name}: {source.kind}")
    return 0


def _events_spool(args: argparse.Namespace) -> tuple[Path, zoneinfo.ZoneInfo]:
    from gateway.config import EventsSource, load_config

    config = load_config(_config_path(args))
    spools = [s for s in config.sources if isinstance(s, EventsSource)]
    if args.source is not None:
        spools = [s for s in spools if s.name == args.source]
    if len(spools) != 1:
        names = ", ".join(s.name for s in config.sources if isinstance(s, EventsSource))
        raise ConfigError(
            f"{config.path}: name one events source with --source (events sources: "
            f"{names or 'none; add a [[source]] of type events'})"
        )
    return spools[0].spool, zoneinfo.ZoneInfo(config.timezone)


def _queue(args: argparse.Namespace, text: str, label: str) -> int:
    from gateway.spool import queue_batch

    spool, tz = _events_spool(args)
    path = queue_batch(spool, text, label, tz=tz)
    print(f"queued {path}: the running gateway sends it (see its status line)")
    return 0


def _event(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    data: dict[str, str] = {}
    for item in args.data:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--data takes KEY=VALUE, got {item!r}")
        data[key] = value
    columns = ["step", "products", "parents", "location", "time", *data]
    row = [
        args.step,
        " ".join(args.product),
        " ".join(args.parent),
        args.location or "",
        args.time or "",
        *data.values(),
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerow(row)
    return _queue(args, buffer.getvalue(), args.step)


def _events(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    try:
        text = args.file.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {args.file} as UTF-8 text: {exc}") from exc
    return _queue(args, text, args.file.stem)


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    del settings
    from gateway.config import load_config
    from gateway.control import request_rotation

    config = load_config(_config_path(args))
    path = request_rotation(config.state)
    print(f"asked the gateway to rotate its key ({path}); its status line shows when it is done")
    return 0
