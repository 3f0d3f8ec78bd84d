"""The ``agritrace`` command line: the composition root that starts each part.

This is the only package allowed to import the services (ingest, traceapi, witness,
firmware_sim); they never import each other. Settings come from ``AGRITRACE_*`` environment
variables; a few flags override them for one run.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from tracecore.errors import AgritraceError, ConfigError
from tracecore.keys import VerifierKey
from tracecore.settings import Settings, load_settings

__all__ = ["main"]

_Command = Callable[[argparse.Namespace, Settings], int]


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
        return command(args, settings)
    except AgritraceError as exc:
        sys.stderr.write(f"agritrace: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130


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
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument(
        "--no-serve", action="store_true", help="run the walkthrough, then exit (for scripts)"
    )
    demo.set_defaults(command=_demo)

    api = commands.add_parser("api", help="serve the trace and registry HTTP API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(command=_api)

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.set_defaults(command=_migrate)

    ingest = commands.add_parser(
        "ingest", help="run the ingest service: device messages in, log entries and receipts out"
    )
    ingest.set_defaults(command=_ingest)

    serve = commands.add_parser("serve", help="run ingest and the API in one process")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(command=_serve)

    witness = commands.add_parser("witness", help="run a C2SP tlog-witness for the log")
    witness.add_argument("--host", default="127.0.0.1")
    witness.add_argument("--port", type=int, default=8100)
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
    show.set_defaults(command=_keys_show)
    return parser


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    del settings  # offline: nothing of this installation is trusted or needed
    from tracecore.bundle import Policy, parse_bundle, verify_bundle

    bundle = parse_bundle(_read(args.bundle))
    policy = Policy.parse(_read(args.policy).decode("utf-8", errors="replace"))
    previous = None
    if args.previous is not None:
        previous = _read(args.previous).decode("utf-8", errors="replace")
    report = verify_bundle(bundle, policy, previous)
    sys.stdout.write(report.render())
    return 0 if report.ok else 1


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
    import uvicorn

    from traceapi import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


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

    return run_service(settings)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    _exit_on_early_sigterm()
    from agritrace.runner import run_service

    return run_service(settings, api=(args.host, args.port))


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
    from agritrace.demo import run_demo

    return run_demo(settings, host=args.host, port=args.port, serve=not args.no_serve)
