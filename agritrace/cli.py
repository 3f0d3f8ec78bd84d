"""The ``agritrace`` command line: the composition root that starts each part.

This is the only package allowed to import the services (ingest, traceapi, witness,
firmware_sim); they never import each other. Settings come from ``AGRITRACE_*`` environment
variables; a few flags override them for one run. The commands that serve the API take the public
URL from their ``--host`` and ``--port`` when ``AGRITRACE_PUBLIC_URL`` is unset
(agritrace/address.py).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from agritrace.devices import add_device_parsers, add_sim_send_parser
from agritrace.gateway_cli import add_gateway_parser
from agritrace.monitor import add_monitor_parser
from agritrace.tokens import add_token_parser
from tracecore.errors import AgritraceError, ConfigError
from tracecore.keys import VerifierKey
from tracecore.settings import Settings, load_settings

if TYPE_CHECKING:
    from tracecore.bundle import Bundle, Inspection

__all__ = ["main"]

_Command = Callable[[argparse.Namespace, Settings], int]
_T = TypeVar("_T")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: _Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        overrides: dict[str, object] = {}
        if args.data_dir is not None:
            overrides["data_dir"] = args.data_dir
        settings = load_settings(**overrides)
        # verify and monitor trust nothing of this installation: they read no data directory.
        if command is not _verify and getattr(args, "offline", False) is not True:
            problem = _data_dir_problem(settings.data_dir)
            if problem is not None:
                sys.stderr.write(f"agritrace: {problem}\n")
                return 2
        return command(args, settings)
    except AgritraceError as exc:
        sys.stderr.write(f"agritrace: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


def _data_dir_problem(path: Path) -> str | None:
    """Say what is wrong with the data directory ``path`` for this user, or None if nothing is.

    It may be missing (the commands create it), but then the nearest existing ancestor must be
    a directory. Checked before any command, so a wrong ``--data-dir`` is one line naming the
    path instead of a traceback from the first file operation deep inside a command.
    """
    where = f"data directory {path} (--data-dir or AGRITRACE_DATA_DIR)"
    existing = path
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as exc:  # a parent directory this user may not search
        return f"{where} cannot be reached: {exc.strerror}"
    if not is_dir:
        if existing == path:
            return f"{where} is not a directory"
        return f"{where} cannot be created: {existing} is not a directory"
    if existing == path and not os.access(path, os.R_OK | os.X_OK):
        return f"{where} is not readable by this user"
    return None


_PORT_MAX = 65_535  # TCP ports are 16-bit (RFC 9293 §3.1)


def _port(text: str) -> int:
    """The argparse type of ``--port``: a TCP port 1-65535.

    Checked here because the server does not: uvloop's ``create_server`` (uvicorn's loop) takes
    the port modulo 2**16, so 99999 bound 34463. Port 0 asks the OS for any free port, which the
    public URL derived from ``--port`` (agritrace/address.py) could not name.
    """
    rule = f"must be a TCP port 1-{_PORT_MAX}"
    try:
        port = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{rule}, got {text!r}") from None
    if not 1 <= port <= _PORT_MAX:
        raise argparse.ArgumentTypeError(f"{rule}, got {port}")
    return port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agritrace",
        description="Farm-to-fork traceability: signed device data, chained, witnessed.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory (default: $AGRITRACE_DATA_DIR or ./data)",
    )
    commands = parser.add_subparsers(metavar="COMMAND")

    demo = commands.add_parser("demo", help="run the whole system locally with sample farms")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=_port, default=8000)
    demo.add_argument(
        "--no-serve", action="store_true", help="run the walkthrough, then exit (for scripts)"
    )
    demo.set_defaults(command=_demo)

    api = commands.add_parser("api", help="serve the trace and registry HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=_port, default=8000)
    api.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    api.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (each reads the settings from the environment); default 1",
    )
    api.set_defaults(command=_api)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(command=_migrate)

    ingest = commands.add_parser(
        "ingest", help="run the ingest service: device messages in, log entries and receipts out"
    )
    ingest.set_defaults(command=_ingest)

    serve = commands.add_parser("serve", help="run ingest and the API in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.set_defaults(command=_serve)

    witness = commands.add_parser("witness", help="run a C2SP tlog-witness for the log")
    witness.add_argument("--host", default="127.0.0.1")
    witness.add_argument("--port", type=_port, default=8100)
    witness.add_argument(
        "--log-vkey",
        action="append",
        required=True,
        metavar="VKEY",
        help="vkey of the log key to trust (repeat for a key rotation)",
    )
    witness.add_argument(
        "--origin", default=None, help="the log's origin line (default: $AGRITRACE_LOG_ORIGIN)"
    )
    witness.add_argument("--name", default="witness", help="witness key name (default: witness)")
    witness.add_argument(
        "--state", type=Path, default=None, help="state file (default: DATA_DIR/witness-NAME.db)"
    )
    witness.set_defaults(command=_witness)

    verify = commands.add_parser(
        "verify", help="check an evidence bundle offline against a trust policy"
    )
    verify.add_argument("bundle", type=Path, help="the bundle JSON (GET /v1/bundle/{key})")
    verify.add_argument(
        "--policy", type=Path, required=True, help="trust policy: log vkey, witnesses, quorum"
    )
    verify.add_argument(
        "--previous",
        type=Path,
        default=None,
        help="an older checkpoint you kept: check the log only grew since (fork detection)",
    )
    verify.set_defaults(command=_verify)

    keys = commands.add_parser("keys", help="create and show Ed25519 keys")
    key_commands = keys.add_subparsers(metavar="ACTION", required=True)
    new = key_commands.add_parser("new", help="create the key NAME and print its vkey")
    new.add_argument("name")
    new.set_defaults(command=_keys_new)
    show = key_commands.add_parser("show", help="print the vkey and device kid of key NAME")
    show.add_argument("name")
    show.add_argument(
        "--cosigner",
        action="store_true",
        help="print the witness cosignature vkey (for AGRITRACE_WITNESSES) instead",
    )
    show.set_defaults(command=_keys_show)
    _add_sim_parser(commands)
    _add_broker_parser(commands)
    add_token_parser(commands)
    add_device_parsers(commands)
    add_gateway_parser(commands)
    add_monitor_parser(commands)
    return parser


def _add_broker_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``agritrace broker-auth``: mosquitto credentials and ACL (agritrace/mosquitto.py)."""
    broker = commands.add_parser(
        "broker-auth",
        help="write mosquitto's password file and ACL: each gateway publishes only as its devices",
    )
    broker.add_argument("--out", type=Path, required=True, help="directory for passwd, acl")
    broker.add_argument(
        "--scenario",
        action="append",
        choices=("egg", "beef"),
        default=[],
        help="the simulator's gateways of this scenario (repeatable)",
    )
    broker.add_argument("--farms", type=int, default=1, help="farms of each --scenario")
    broker.add_argument("--prefix", default="", help="as given to agritrace sim")
    broker.add_argument(
        "--per-device",
        action="store_true",
        help="one login per device (named by its id) instead of one per party's gateway",
    )
    broker.add_argument(
        "--registry",
        action="store_true",
        help="also every device registered in the database (AGRITRACE_DB_URL), by party",
    )
    broker.set_defaults(command=_broker_auth)


def _broker_auth(args: argparse.Namespace, settings: Settings) -> int:
    from agritrace.mosquitto import write_broker_auth
    from firmware_sim.scenarios import ScenarioConfig, build_scenario

    parties: dict[str, set[str]] = {}
    for name in args.scenario:
        scenario = build_scenario(name, ScenarioConfig(farms=args.farms, prefix=args.prefix), 0)
        for spec in scenario.devices:
            parties.setdefault(spec.party, set()).add(spec.id)
    if args.registry:
        from sqlmodel import select

        from tracecore.storage import Device, make_engine, session_scope

        engine = make_engine(settings.database_url)
        try:
            with session_scope(engine) as session:
                for device in session.exec(select(Device)).all():
                    parties.setdefault(device.party_id, set()).add(device.id)
        finally:
            engine.dispose()
    if not parties:
        raise ConfigError("broker-auth: name a --scenario or pass --registry")
    passwords = write_broker_auth(args.out, parties, per_device=args.per_device)
    sys.stderr.write(
        f"wrote {args.out / 'passwd'} and {args.out / 'acl'}: {len(passwords)} users "
        f"({len(parties)} gateways and ingest); passwords in {args.out / 'passwords'}/\n"
    )
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # offline: nothing of this installation is trusted or needed
    from tracecore.bundle import Policy, inspect_bundle, parse_bundle

    bundle = parse_bundle(_read(args.bundle))
    policy = Policy.parse(_read(args.policy).decode("utf-8", errors="replace"))
    previous = None
    if args.previous is not None:
        previous = _read(args.previous).decode("utf-8", errors="replace")
    inspection = inspect_bundle(bundle, policy, previous)
    report = inspection.report
    sys.stdout.write(report.render())
    if not report.ok:
        return 1
    return _rerun_contracts(bundle, inspection)


def _rerun_contracts(bundle: Bundle, inspection: Inspection) -> int:
    """Re-run the contracts on the verified content; compare with the server's claims.

    A claimed result records the log size it saw: it is re-run on the entries below that size
    (the product's history then), so a result stored a few checkpoints ago still compares.
    """
    import cbor2

    from contracts import evaluate_story
    from tracecore.verdict import tell_story

    size = inspection.report.size
    product = bundle.product.path
    current = evaluate_story(tell_story(product, inspection), size)
    sys.stdout.write(f"contracts, re-run from the bundle at size {size}:\n")
    for result in current:
        reason = result.reasons[-1].text if result.reasons else ""
        sys.stdout.write(f"  {result.status.value:<14} {result.contract:<22} {reason}\n")
    if not bundle.contracts:
        return 0
    differ = 0
    at_size: dict[int, dict[str, bytes]] = {}
    for claim in bundle.contracts:
        try:
            decoded = cbor2.loads(claim)
        except (cbor2.CBORDecodeError, ValueError, TypeError):
            decoded = None
        if not isinstance(decoded, dict):
            decoded = {}
        name, seen = str(decoded.get("contract", "?")), decoded.get("log_size")
        if not isinstance(seen, int) or not 0 < seen <= size:
            differ += 1
            sys.stdout.write(f"  DIFFERS {name}: the claimed log size {seen!r} is not 1..{size}\n")
            continue
        if seen not in at_size:
            past = _prefix(inspection, seen)
            results = evaluate_story(tell_story(product, past), seen)
            at_size[seen] = {r.contract: r.to_bytes() for r in results}
        if at_size[seen].get(name) == claim:
            sys.stdout.write(f"  as the server says: {name} (stored at size {seen})\n")
        else:
            differ += 1
            sys.stdout.write(f"  DIFFERS {name}: re-run at size {seen} gives another result\n")
    if differ:
        sys.stdout.write(f"CONTRACTS DIFFER: {differ} result(s) are not what the server claims\n")
        return 1
    return 0


def _prefix(inspection: Inspection, size: int) -> Inspection:
    """The verified content as it stood at ``size``: the entries below it (chains are
    append-only, so this is the product's history then)."""
    import dataclasses

    return dataclasses.replace(
        inspection,
        entries={i: e for i, e in inspection.entries.items() if i < size},
        messages={i: m for i, m in inspection.messages.items() if i < size},
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def _keys_new(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.keys import LOG_KEY_FILE, generate_signer, write_key_file

    # The log's key lives in log.key but is named after the log's origin (C2SP convention),
    # so that checkpoint verifiers find the origin in its vkey.
    is_log = args.name == LOG_KEY_FILE
    key = generate_signer(settings.log_origin if is_log else args.name)
    path = write_key_file(settings.keys_dir, key, args.name)
    sys.stderr.write(f"wrote {path}\n")
    _print_key(key.verifier)
    return 0


def _keys_show(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.keys import LOG_KEY_FILE, read_key_file, read_log_key

    if args.name == LOG_KEY_FILE:
        key = read_log_key(settings.keys_dir, settings.log_origin)
    else:
        key = read_key_file(settings.keys_dir, args.name)
    if args.cosigner:
        from tracecore.note import cosigner_verifier

        print(cosigner_verifier(key))
        return 0
    _print_key(key.verifier)
    return 0


def _print_key(vkey: VerifierKey) -> None:
    print(vkey)
    sys.stderr.write(
        f"public key (base64): {base64.b64encode(vkey.public_key).decode()}\n"
        f"device kid (hex):    {vkey.kid.hex()}\n"
    )


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    del args
    from tracecore.storage import make_engine, upgrade

    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    sys.stderr.write(f"database at {settings.database_url} is up to date\n")
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    # A SIGTERM before the server (or run_api_workers) has its handler is a clean stop too.
    _exit_on_early_sigterm()
    from agritrace.address import serving_settings
    from agritrace.runner import freeze_startup_heap, reuse_port_socket, run_api_workers
    from agritrace.serving import run_server, server_options
    from traceapi import create_app

    if args.workers < 1:
        sys.stderr.write("agritrace api: --workers must be at least 1\n")
        return 2
    # Each worker process derives the same URL: it runs this function with the same arguments.
    settings = serving_settings(settings, args.host, args.port)
    if args.reuse_port:
        # One of several processes: each has its own listening socket on the same port, and
        # the kernel spreads new connections over them (SO_REUSEPORT). A shared socket, as
        # uvicorn's own --workers uses, let one process take most keep-alive connections.
        sock = reuse_port_socket(args.host, args.port)
        app = create_app(settings)
        freeze_startup_heap()
        run_server(app, fd=sock.fileno(), log_level="warning", **server_options(settings))
        return 0
    if args.workers == 1:
        app = create_app(settings)
        freeze_startup_heap()
        run_server(
            app, host=args.host, port=args.port, log_level="info", **server_options(settings)
        )
        return 0
    return run_api_workers(args.host, args.port, args.workers)


def _witness(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from witness import create_app, open_witness

    origin = args.origin or settings.log_origin
    logs = [(origin, VerifierKey.parse(text)) for text in args.log_vkey]
    state = args.state or settings.data_dir / f"witness-{args.name}.db"
    witness = open_witness(settings.keys_dir, args.name, logs, state)
    print(witness.vkey, flush=True)
    sys.stderr.write(f"witness {args.name} follows {origin}; state in {state}\n")
    uvicorn.run(create_app(witness), host=args.host, port=args.port, log_level="info")
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    del args
    _exit_on_early_sigterm()
    from agritrace.runner import run_service

    return run_service(settings, settle_gc=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    _exit_on_early_sigterm()
    from agritrace.address import serving_settings
    from agritrace.runner import run_service

    settings = serving_settings(settings, args.host, args.port)
    return run_service(settings, api=(args.host, args.port), settle_gc=True)


def _exit_on_early_sigterm() -> None:
    """Exit 0 on a SIGTERM that arrives while the service is still starting.

    Nothing has been received yet, so there is nothing to finish; once the event loop runs,
    the service's own handler takes over and shuts down cleanly.
    """
    import signal

    def exit_now(signum: int, frame: object) -> None:
        del signum, frame
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, exit_now)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from agritrace.address import serving_settings
    from agritrace.demo import run_demo

    settings = serving_settings(settings, args.host, args.port)
    return run_demo(settings, host=args.host, port=args.port, serve=not args.no_serve)


def _add_sim_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``agritrace sim provision|run``: simulated farms and supply chains (firmware_sim)."""
    sim = commands.add_parser("sim", help="simulated farms and supply chains over MQTT")
    actions = sim.add_subparsers(metavar="ACTION", required=True)
    for name, help_text, command in (
        ("provision", "register a scenario's parties and devices, write key files", _sim_provision),
        ("run", "run a scenario's devices over MQTT with a live progress display", _sim_run),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--api", default="http://127.0.0.1:8000", help="registry API base URL")
        action.add_argument("--admin-token", default=None, help="default: $AGRITRACE_ADMIN_TOKEN")
        action.add_argument("--scenario", choices=("egg", "beef"), required=True)
        action.add_argument("--farms", type=int, default=1)
        action.add_argument(
            "--prefix", default="", help="put before every party and device id (isolation)"
        )
        action.set_defaults(command=command)
        if name == "run":
            action.add_argument("--speed", type=float, default=60.0, help="scenario s per wall s")
            action.add_argument("--duration", default="10m", help="wall time: 30s, 10m, 2h")
            action.add_argument("--broker", default=None, help="mqtt://host:port")
            action.add_argument("--seed", type=int, default=0)
            action.add_argument(
                "--excursions", type=float, default=0.0, help="fraction of cold readings too warm"
            )
            action.add_argument(
                "--settle", type=float, default=60.0, help="max s to wait for the last receipts"
            )
            action.add_argument(
                "--broker-passwords",
                type=Path,
                default=None,
                metavar="DIR",
                help="log each party's gateway in as gw-PARTY with the password in DIR/gw-PARTY",
            )
            action.add_argument(
                "--fault", action="append", default=[], metavar="NAME[:RATE]", help="repeatable"
            )
    add_sim_send_parser(actions)


def _sim_admin_token(args: argparse.Namespace, settings: Settings) -> str | None:
    if args.admin_token:
        return str(args.admin_token)
    return settings.admin_token.get_secret_value() if settings.admin_token else None


def _sim_provision(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from firmware_sim.sim import provision_scenario

    token = _sim_admin_token(args, settings)
    if not token:
        raise ConfigError("sim provision needs --admin-token or AGRITRACE_ADMIN_TOKEN")
    state = asyncio.run(
        provision_scenario(
            api=args.api,
            admin_token=token,
            scenario=args.scenario,
            farms=args.farms,
            data_dir=settings.data_dir,
            prefix=args.prefix,
        )
    )
    sys.stderr.write(
        f"provisioned {len(state.parties)} parties and {len(state.devices)} devices; "
        f"log key {state.log_vkey}\n"
    )
    return 0


def _sim_run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import signal

    from firmware_sim.faults import parse_faults
    from firmware_sim.sim import SimOptions, parse_duration, run_simulation
    from tracecore.mqtt import BrokerAddress

    broker_url = args.broker or settings.mqtt_url or "mqtt://127.0.0.1:1883"
    options = SimOptions(
        scenario=args.scenario,
        api=args.api,
        broker=BrokerAddress.parse(broker_url),
        data_dir=settings.data_dir,
        admin_token=_sim_admin_token(args, settings),
        farms=args.farms,
        speed=args.speed,
        duration_s=parse_duration(args.duration),
        seed=args.seed,
        prefix=args.prefix,
        excursion_rate=args.excursions,
        settle_s=args.settle,
        faults=parse_faults(args.fault),
        progress=sys.stderr,
        broker_passwords=args.broker_passwords,
    )
    summary = asyncio.run(_until_sigterm(run_simulation(options)))
    if summary is None:
        sys.stderr.write("agritrace sim: stopped by SIGTERM before the end of the run\n")
        return 128 + signal.SIGTERM
    sys.stderr.write(summary.render())
    return 0 if summary.ok else 1


async def _until_sigterm(run: Coroutine[object, object, _T]) -> _T | None:
    """Await ``run``; on SIGTERM cancel it and return None.

    ``docker stop`` sends SIGTERM, which a container's first process ignores unless it handles
    it: the simulator then ran on until the SIGKILL ten seconds later. Cancelled, the run leaves
    as at its end: the gateways' MQTT sessions and outboxes are closed.
    """
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(run)
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await task
    except asyncio.CancelledError:
        if terminated:
            return None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
