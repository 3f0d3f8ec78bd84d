"""``agritrace token create|list|revoke``: party and inspector bearer tokens, on the database.

The operator's tool on the server: it works on the database of the settings
(``AGRITRACE_DB_URL`` or the SQLite file in the data directory) and needs no admin token, as
``agritrace migrate`` does not. The HTTP routes do the same for remote callers
(docs/registry-api.md, "Token lifetime and revocation"); docs/operations.md has the rotation
routine. A token's text is printed once, by ``create``; ``list`` never shows it nor its hash.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tracecore.errors import ConfigError
from tracecore.settings import Settings

if TYPE_CHECKING:
    from sqlmodel import Session

__all__ = ["add_token_parser"]

_DAY_MS = 24 * 3600 * 1000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def add_token_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agritrace token create|list|revoke`` to the command line."""
    from tracecore.storage import DEFAULT_TOKEN_LIFETIME_MS, MAX_TOKEN_LIFETIME_MS

    token = commands.add_parser(
        "token",
        aliases=["tokens"],  # `agritrace tokens list` reads as naturally
        help="issue, list and revoke party and inspector tokens",
    )
    actions = token.add_subparsers(metavar="ACTION", required=True)

    create = actions.add_parser(
        "create", help="issue a token for PARTY: its text on stdout (shown once), its id on stderr"
    )
    create.add_argument("party", help="party id")
    create.add_argument(
        "--days",
        type=int,
        default=DEFAULT_TOKEN_LIFETIME_MS // _DAY_MS,
        help=(
            f"days until it expires (default {DEFAULT_TOKEN_LIFETIME_MS // _DAY_MS}, "
            f"at most {MAX_TOKEN_LIFETIME_MS // _DAY_MS})"
        ),
    )
    create.set_defaults(command=_create)

    listing = actions.add_parser(
        "list", help="list tokens: id, party, role, created, expires, revoked (never the text)"
    )
    listing.add_argument("--party", default=None, help="only this party's tokens")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    listing.set_defaults(command=_list)

    revoke = actions.add_parser("revoke", help="revoke tokens by id, from now on")
    revoke.add_argument("ids", nargs="+", type=int, metavar="ID", help="token id (token list)")
    revoke.set_defaults(command=_revoke)


@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    """A transaction on the settings' database, refused unless its schema is the newest."""
    from tracecore.storage import current_revision, head_revision, make_engine, session_scope

    engine = make_engine(settings.database_url)
    try:
        revision, head = current_revision(engine), head_revision()
        if revision != head:
            raise ConfigError(
                f"the database schema is at revision {revision or 'none'}, not {head}: "
                "run `agritrace migrate` first"
            )
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def _create(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.storage import format_ms, issue_token

    if args.days < 1:
        raise ConfigError("--days must be at least 1")
    with _session(settings) as session:
        issued = issue_token(session, args.party, _now_ms(), lifetime_ms=args.days * _DAY_MS)
    print(issued.token, flush=True)
    sys.stderr.write(
        f"token {issued.id} of {issued.party_id} ({issued.role}), expires "
        f"{format_ms(issued.expires_ms)}; its text is shown only now\n"
    )
    return 0


def _cell(ms: int | None) -> str:
    return "-" if ms is None else _format_ms(ms)


def _format_ms(ms: int) -> str:
    from tracecore.storage import format_ms

    return format_ms(ms)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.storage import list_tokens

    now = _now_ms()
    with _session(settings) as session:
        infos = list_tokens(session, args.party)
    if args.json:
        records = [
            {
                "id": info.id,
                "party": info.party_id,
                "role": info.role,
                "created_ms": info.created_ms,
                "expires_ms": info.expires_ms,
                "revoked_ms": info.revoked_ms,
                "state": info.state(now),
            }
            for info in infos
        ]
        print(json.dumps(records, indent=2))
        return 0
    table = [("ID", "PARTY", "ROLE", "CREATED", "EXPIRES", "REVOKED", "STATE")]
    table += [
        (
            str(info.id),
            info.party_id or "-",
            info.role,
            _cell(info.created_ms),
            _cell(info.expires_ms),
            _cell(info.revoked_ms),
            info.state(now),
        )
        for info in infos
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from tracecore.storage import revoke_token_id

    now = _now_ms()
    with _session(settings) as session:
        revoked = [revoke_token_id(session, token_id, now) for token_id in args.ids]
    for info in revoked:
        when = _format_ms(info.revoked_ms if info.revoked_ms is not None else now)
        sys.stderr.write(f"token {info.id} of {info.party_id} ({info.role}) revoked on {when}\n")
    return 0
