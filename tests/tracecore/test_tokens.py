"""Token lifecycle in storage: expiry, revocation by id, listing, and migration 0007.

On SQLite and PostgreSQL (the ``engine`` and ``engine_factory`` fixtures).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Engine, text
from sqlmodel import select

from tracecore.errors import Conflict, IdentifierError, NotFound
from tracecore.storage import (
    DEFAULT_TOKEN_LIFETIME_MS,
    MAX_TOKEN_LIFETIME_MS,
    Token,
    create_party,
    find_token,
    get_token,
    hash_token,
    issue_token,
    list_tokens,
    lookup_token,
    revoke_token_id,
    session_scope,
    upgrade,
)
from tracecore.storage.migrate import alembic_config

T0 = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000


def parties(engine: Engine) -> None:
    """Create the farms farm-1 and farm-2 and the inspection agency agency-1 at T0."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "Farm", "farm", T0)
        create_party(session, "farm-2", "Farm 2", "farm", T0)
        create_party(session, "agency-1", "Agency", "inspector", T0)


def test_a_token_expires_after_its_lifetime(engine: Engine) -> None:
    """90 days by default, or the lifetime given; accepted up to the last ms before expires_ms."""
    parties(engine)
    with session_scope(engine) as session:
        default = issue_token(session, "farm-1", T0)
        short = issue_token(session, "agency-1", T0, lifetime_ms=DAY_MS)
    assert DEFAULT_TOKEN_LIFETIME_MS == 90 * DAY_MS
    assert (default.created_ms, default.expires_ms) == (T0, T0 + 90 * DAY_MS)
    assert short.expires_ms == T0 + DAY_MS
    with session_scope(engine) as session:
        assert find_token(session, short.token, T0 + DAY_MS - 1) is not None
        assert find_token(session, short.token, T0 + DAY_MS) is None
        info = lookup_token(session, short.token)
        assert info is not None
        assert info.state(T0 + DAY_MS) == "expired"
        assert info.refusal(T0 + DAY_MS) == "token expired on 2023-11-15T22:13:20Z"
        assert find_token(session, default.token, T0 + 90 * DAY_MS - 1) is not None
        assert find_token(session, default.token, T0 + 90 * DAY_MS) is None


@pytest.mark.parametrize("lifetime_ms", [0, -1, MAX_TOKEN_LIFETIME_MS + 1])
def test_a_lifetime_out_of_range_is_refused(engine: Engine, lifetime_ms: int) -> None:
    """No token without an end, nor one that ends before it starts."""
    parties(engine)
    with pytest.raises(IdentifierError, match="lifetime"), session_scope(engine) as session:
        issue_token(session, "farm-1", T0, lifetime_ms=lifetime_ms)


def test_revoke_by_id_holds_at_once_and_keeps_the_first_time(engine: Engine) -> None:
    """A revoked token is refused whatever the time; revoking again keeps the first time."""
    parties(engine)
    with session_scope(engine) as session:
        issued = issue_token(session, "farm-1", T0)
    with session_scope(engine) as session:
        info = revoke_token_id(session, issued.id, T0 + 5)
        assert (info.id, info.revoked_ms) == (issued.id, T0 + 5)
    with session_scope(engine) as session:
        assert find_token(session, issued.token, T0 + 1) is None  # before the revocation time too
        assert revoke_token_id(session, issued.id, T0 + 9).revoked_ms == T0 + 5
        found = lookup_token(session, issued.token)
        assert found is not None
        assert found.refusal(T0 + 1) == "token revoked on 2023-11-14T22:13:20Z"
    with pytest.raises(NotFound, match="no token 999"), session_scope(engine) as session:
        revoke_token_id(session, 999, T0)


def test_list_tokens_shows_no_secret(engine: Engine) -> None:
    """Listing gives id, party, role and times, oldest first, per party or all; never the hash."""
    parties(engine)
    with session_scope(engine) as session:
        first = issue_token(session, "farm-1", T0)
        other = issue_token(session, "farm-2", T0 + 1)
        second = issue_token(session, "farm-1", T0 + 2, lifetime_ms=DAY_MS)
    with session_scope(engine) as session:
        mine = list_tokens(session, "farm-1")
        everyone = list_tokens(session)
        assert [info.id for info in mine] == [first.id, second.id]
        assert [info.id for info in everyone] == [first.id, other.id, second.id]
        assert get_token(session, second.id) == mine[1]
        assert mine[1]._asdict() == {
            "id": second.id,
            "party_id": "farm-1",
            "role": "party",
            "created_ms": T0 + 2,
            "expires_ms": T0 + 2 + DAY_MS,
            "revoked_ms": None,
        }
        for info in everyone:
            shown = repr(info)
            assert "at_" not in shown
            row = session.get(Token, info.id)
            assert row is not None
            assert row.token_hash.hex() not in shown
        with pytest.raises(NotFound):
            list_tokens(session, "nobody")
        with pytest.raises(NotFound):
            get_token(session, 999)


def test_the_database_refuses_a_token_without_an_expiry(engine: Engine) -> None:
    """expires_ms is NOT NULL and after created_ms, whoever writes the row."""
    parties(engine)
    for expires_ms in (None, T0):
        with pytest.raises(Conflict), session_scope(engine) as session:
            session.execute(
                text(
                    "INSERT INTO tokens (party_id, role, token_hash, created_ms, expires_ms) "
                    "VALUES ('farm-1', 'party', :hash, :created, :expires)"
                ),
                {"hash": hash_token(f"at_{expires_ms}"), "created": T0, "expires": expires_ms},
            )


# --- migration 0007 ----------------------------------------------------------------------------

OLD_TOKEN = "at_" + "o" * 43
REVOKED_TOKEN = "at_" + "r" * 43


def test_upgrade_gives_old_tokens_90_days_from_the_upgrade(
    engine_factory: Callable[[], Engine],
) -> None:
    """Tokens issued before 0007 keep working after the upgrade, until 90 days after it.

    A revoked one stays revoked; the constraints of the table survive the rebuild (SQLite).
    """
    engine = engine_factory()
    upgrade(engine, "0005")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO parties (id, name, kind, created_ms) "
                "VALUES ('farm-1', 'Farm', 'farm', :t)"
            ),
            {"t": T0},
        )
        for token, revoked in ((OLD_TOKEN, None), (REVOKED_TOKEN, T0 + 1)):
            connection.execute(
                text(
                    "INSERT INTO tokens (party_id, role, token_hash, created_ms, revoked_ms) "
                    "VALUES ('farm-1', 'party', :hash, :t, :revoked)"
                ),
                {"hash": hash_token(token), "t": T0, "revoked": revoked},
            )
    before = time.time_ns() // 1_000_000
    upgrade(engine)
    after = time.time_ns() // 1_000_000
    with session_scope(engine) as session:
        old = lookup_token(session, OLD_TOKEN)
        assert old is not None
        assert before + 90 * DAY_MS <= old.expires_ms <= after + 90 * DAY_MS
        assert find_token(session, OLD_TOKEN, after) == ("party", "farm-1", old.id)
        assert find_token(session, OLD_TOKEN, old.expires_ms) is None
        assert find_token(session, REVOKED_TOKEN, after) is None
        rows = session.exec(select(Token)).all()
        assert all(row.expires_ms > row.created_ms for row in rows)
    with pytest.raises(Conflict), session_scope(engine) as session:  # ck_tokens_role kept
        session.add(
            Token(
                party_id="farm-1",
                role="admin",
                token_hash=hash_token("at_x"),
                created_ms=T0,
                expires_ms=T0 + 1,
            )
        )
    with pytest.raises(Conflict), session_scope(engine) as session:  # uq_tokens_token_hash kept
        session.add(
            Token(
                party_id="farm-1",
                role="party",
                token_hash=hash_token(OLD_TOKEN),
                created_ms=T0,
                expires_ms=T0 + 1,
            )
        )


def test_downgrade_from_0007_drops_the_expiry(engine_factory: Callable[[], Engine]) -> None:
    """Downgrading to 0006 and upgrading again works; old tokens get a new grace period."""
    engine = engine_factory()
    upgrade(engine)
    parties(engine)
    with session_scope(engine) as session:
        issued = issue_token(session, "farm-1", T0)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
    upgrade(engine)
    with session_scope(engine) as session:
        info = lookup_token(session, issued.token)
        assert info is not None
        assert info.expires_ms > time.time_ns() // 1_000_000
