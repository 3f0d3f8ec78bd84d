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

from tracecore.errors import AgritraceError
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

    keys = commands.add_parser("keys", help="create and show Ed25519 keys")
    key_commands = keys.add_subparsers(metavar="ACTION", required=True)
    new = key_commands.add_parser("new", help="create the key NAME and print its vkey")
    new.add_argument("name")
    new.set_defaults(command=_keys_new)
    show = key_commands.add_parser("show", help="print the vkey and device kid of key NAME")
    show.add_argument("name")
    show.set_defaults(command=_keys_show)
    return parser


def _keys_new(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.keys import generate_signer, write_key_file

    key = generate_signer(args.name)
    path = write_key_file(settings.keys_dir, key)
    sys.stderr.write(f"wrote {path}\n")
    _print_key(key.verifier)
    return 0


def _keys_show(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.keys import read_key_file

    _print_key(read_key_file(settings.keys_dir, args.name).verifier)
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


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from agritrace.demo import run_demo

    return run_demo(settings, host=args.host, port=args.port, serve=not args.no_serve)
