"""Storage: engines, migrations, models and the registry repository, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from nacl.signing import SigningKey
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col, select

from tracecore.errors import (
    ConfigError,
    Conflict,
    IdentifierError,
    KeyFileError,
    NotFound,
    RevokedKey,
    StorageError,
    UnknownKey,
)
from tracecore.identifiers import ProductKey
from tracecore.keys import device_kid
from tracecore.storage import (
    ChainLink,
    Device,
    DeviceKey,
    LogEntry,
    Party,
    Product,
    ProductParent,
    Receipt,
    Rejection,
    Token,
    create_party,
    current_key,
    current_revision,
    device_keys,
    durability_problems,
    find_token,
    get_device,
    hash_token,
    head_revision,
    issue_token,
    key_for,
    make_engine,
    register_device,
    revoke_key,
    revoke_token,
    rotate_key,
    session_scope,
    statistics_scope,
    upgrade,
    validate_public_key,
)
from tracecore.storage.migrate import alembic_config

T0 = 1_700_000_000_000
BINARY = bytes(range(256)) + b"\x00\x00\xff\x00"  # every byte value, NULs, trailing zero


def new_key() -> bytes:
    """Return a fresh random Ed25519 public key."""
    return bytes(SigningKey.generate().verify_key)


def seed(engine: Engine, *, party: str = "farm-1", device: str = "dev-1") -> bytes:
    """Create a farm party and one device at T0; return the device's public key."""
    key = new_key()
    with session_scope(engine) as session:
        create_party(session, party, "Green Farm", "farm", T0)
        register_device(session, device, party, key, T0)
    return key


# --- engine and migrations ---------------------------------------------------------------------


def test_sqlite_engine_pragmas(tmp_path: Path) -> None:
    """SQLite connections use WAL, foreign keys, a busy timeout and synchronous=FULL (durable)."""
    path = tmp_path / "nested" / "dir" / "db.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10_000
            assert connection.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert path.exists()
    finally:
        engine.dispose()


def test_make_engine_rejects_other_databases() -> None:
    """An unsupported or unparsable URL is a ConfigError."""
    with pytest.raises(ConfigError, match="unsupported"):
        make_engine("mysql://localhost/x")
    with pytest.raises(ConfigError):
        make_engine("not a url")


def test_postgresql_url_uses_psycopg() -> None:
    """A bare postgresql:// URL is driven by psycopg 3."""
    engine = make_engine("postgresql://u:p@127.0.0.1:1/none")
    try:
        assert engine.dialect.driver == "psycopg"
    finally:
        engine.dispose()


def test_migration_matches_models(engine_factory: Callable[[], Engine]) -> None:
    """Migrating an empty database yields exactly the tables of the models, idempotently."""
    engine = engine_factory()
    assert current_revision(engine) is None
    upgrade(engine)
    upgrade(engine)  # a second run is a no-op
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert tables == set(SQLModel.metadata.tables)


def test_upgrade_accepts_url(db_url: str) -> None:
    """upgrade() takes a URL as well as an engine."""
    upgrade(db_url)
    assert current_revision(db_url) == head_revision()


def test_engine_settings_after_migration(engine: Engine) -> None:
    """A migrated SQLite file stays in WAL mode; PostgreSQL is driven by psycopg 3."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        else:
            assert engine.dialect.driver == "psycopg"
            assert connection.execute(text("SELECT 1")).scalar() == 1


def test_session_scope_rolls_back_and_wraps(engine: Engine) -> None:
    """A constraint violation leaves session_scope as Conflict and nothing is committed."""
    with pytest.raises(Conflict), session_scope(engine) as session:  # noqa: PT012
        session.add(Party(id="p-ok", name="x", kind="farm", created_ms=T0))
        session.add(Party(id="p-bad", name="x", kind="spaceship", created_ms=T0))
    with session_scope(engine) as session:
        assert session.get(Party, "p-ok") is None


def _commit_waits_for_disk(session: Session) -> bool:
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one()) >= 2
    return connection.exec_driver_sql("SHOW synchronous_commit").scalar_one() != "off"


def test_statistics_scope_relaxes_only_its_own_commit(engine: Engine) -> None:
    """Scan statistics commit without waiting for the disk; the connection is strict again
    afterwards, after a failure too, so no log write ever commits relaxed."""
    with statistics_scope(engine) as session:
        assert not _commit_waits_for_disk(session)
        create_party(session, "stats-ok", "x", "farm", T0)
    with pytest.raises(Conflict), statistics_scope(engine) as session:  # noqa: PT012
        create_party(session, "stats-bad", "x", "farm", T0)
        create_party(session, "stats-bad", "x", "farm", T0)
    for _ in range(3):  # whichever pooled connection comes next
        with session_scope(engine) as session:
            assert _commit_waits_for_disk(session)
            assert session.get(Party, "stats-ok") is not None
            assert session.get(Party, "stats-bad") is None
    assert durability_problems(engine) == []


def test_session_scope_wraps_other_errors(engine: Engine) -> None:
    """A SQL error other than an integrity error leaves as StorageError, not SQLAlchemyError."""
    with pytest.raises(StorageError) as info, session_scope(engine) as session:
        session.exec(text("SELECT * FROM no_such_table"))  # type: ignore[call-overload]
    assert not isinstance(info.value, Conflict | NotFound)
    assert info.value.__cause__ is not None


def test_foreign_keys_enforced(engine: Engine) -> None:
    """A device of an unknown party is refused by the database on both engines."""
    with pytest.raises(Conflict), session_scope(engine) as session:
        session.add(Device(id="dev-x", party_id="nobody", created_ms=T0))


@pytest.mark.parametrize(
    ("column", "value"),
    [("kid", b"\x01" * 7), ("public_key", b"\x01" * 31)],
)
def test_key_length_checks(engine: Engine, column: str, value: bytes) -> None:
    """The database refuses a kid that is not 8 bytes and a public key that is not 32."""
    seed(engine)
    row = {"device_id": "dev-1", "kid": b"\x02" * 8, "public_key": b"\x03" * 32}
    row[column] = value
    with pytest.raises(Conflict), session_scope(engine) as session:
        session.add(DeviceKey(valid_from_ms=T0, **row))  # type: ignore[arg-type]


def test_pseq_check(engine: Engine) -> None:
    """A chain position below 1 is refused by the database."""
    seed(engine)
    with session_scope(engine) as session:
        session.add(
            LogEntry(
                index=0,
                kind="device_message",
                raw=b"x",
                raw_sha256=b"\x00" * 32,
                entry=b"e",
                leaf_hash=b"\x00" * 32,
                received_ms=T0,
            )
        )
        session.add(Product(key="01/00000000000017/10/A", owner_party_id="farm-1", created_ms=T0))
    with pytest.raises(Conflict), session_scope(engine) as session:
        session.add(
            ChainLink(
                product_key="01/00000000000017/10/A", pseq=0, log_index=0, prev_hash=b"\0" * 32
            )
        )


def test_binary_round_trip(engine: Engine) -> None:
    """Every binary column gives back exactly the bytes stored; big ms values survive."""
    public_key = seed(engine)
    raw_sha = hashlib.sha256(BINARY).digest()
    leaf = hashlib.sha256(b"\x00" + BINARY).digest()
    big_ms = 2**62
    with session_scope(engine) as session:
        session.add(
            LogEntry(
                index=0,
                kind="device_message",
                raw=BINARY,
                raw_sha256=raw_sha,
                entry=BINARY[::-1],
                leaf_hash=leaf,
                device_id="dev-1",
                seq=1,
                received_ms=big_ms,
            )
        )
        session.add(
            Product(
                key="01/00000000000017/10/A",
                kind="egg-lot",
                owner_party_id="farm-1",
                created_ms=T0,
                commissioned_index=0,
            )
        )
        session.add(Product(key="01/00000000000017/10/B", owner_party_id="farm-1", created_ms=T0))
        session.flush()
        session.add(
            ProductParent(product_key="01/00000000000017/10/B", parent_key="01/00000000000017/10/A")
        )
        session.add(
            ChainLink(
                product_key="01/00000000000017/10/A", pseq=1, log_index=0, prev_hash=b"\0" * 32
            )
        )
        session.add(Receipt(device_id="dev-1", seq=1, log_index=0, raw=BINARY + b"\x00"))
        session.add(
            Rejection(
                raw=b"\x00" + BINARY,
                topic="agritrace/v1/devices/dev-1/up",
                reason="malformed",
                detail="not CBOR",
                received_ms=T0,
                raw_length=1 + len(BINARY),
                raw_sha256=hashlib.sha256(b"\x00" + BINARY).digest(),
                received_count=1,
                last_received_ms=T0,
            )
        )
    with session_scope(engine) as session:
        entry = session.get(LogEntry, 0)
        assert entry is not None
        assert (entry.raw, entry.raw_sha256, entry.entry, entry.leaf_hash) == (
            BINARY,
            raw_sha,
            BINARY[::-1],
            leaf,
        )
        assert entry.received_ms == big_ms
        receipt = session.get(Receipt, ("dev-1", 1))
        assert receipt is not None
        assert receipt.raw == BINARY + b"\x00"
        rejection = session.exec(select(Rejection)).one()
        assert rejection.raw == b"\x00" + BINARY
        assert current_key(session, "dev-1").public_key == public_key
        link = session.get(ChainLink, ("01/00000000000017/10/A", 1))
        assert link is not None
        assert link.prev_hash == b"\0" * 32


def test_log_entry_device_seq_unique(engine: Engine) -> None:
    """Two log entries for the same device and seq are a Conflict."""
    seed(engine)

    def entry(index: int) -> LogEntry:
        """Return a log entry of dev-1 seq 7 at ``index``."""
        return LogEntry(
            index=index,
            kind="device_message",
            raw=bytes([index]),
            raw_sha256=b"\x01" * 32,
            entry=b"e",
            leaf_hash=b"\x02" * 32,
            device_id="dev-1",
            seq=7,
            received_ms=T0,
        )

    with session_scope(engine) as session:
        session.add(entry(0))
    with pytest.raises(Conflict, match=r"(?i)unique"), session_scope(engine) as session:
        session.add(entry(1))
    with session_scope(engine) as session:
        assert session.get(LogEntry, 1) is None


def _rejection(**changes: object) -> Rejection:
    """A valid rejection row of 3 whole bytes, with ``changes`` applied."""
    fields: dict[str, object] = {
        "raw": b"abc",
        "topic": "t",
        "reason": "malformed",
        "detail": "",
        "received_ms": T0,
        "raw_length": 3,
        "raw_sha256": hashlib.sha256(b"abc").digest(),
        "received_count": 1,
        "last_received_ms": T0,
    }
    fields.update(changes)
    return Rejection(**fields)


def test_rejection_valid_row_is_stored(engine: Engine) -> None:
    """The row the check tests below vary is itself valid (too_large is a known reason)."""
    with session_scope(engine) as session:
        session.add(_rejection())
        session.add(_rejection(reason="too_large", raw=b"a", raw_length=10**8))


@pytest.mark.parametrize(
    "changes",
    [
        {"reason": "bored"},
        {"raw_length": 2},
        {"raw_sha256": b"short"},
        {"received_count": 0},
        {"last_received_ms": T0 - 1},
    ],
)
def test_rejection_checks(engine: Engine, changes: dict[str, object]) -> None:
    """A rejection breaking a rule of its table (reason, length, hash, count, times) is refused."""
    with pytest.raises(Conflict), session_scope(engine) as session:
        session.add(_rejection(**changes))


def _old_rejection(connection: Connection, raw: bytes, received_ms: int) -> None:
    connection.execute(
        text(
            "INSERT INTO rejections (raw, topic, reason, detail, received_ms) "
            "VALUES (:raw, 't', 'malformed', 'd', :at)"
        ),
        {"raw": raw, "at": received_ms},
    )


def test_migration_0006_fills_existing_rejections(engine_factory: Callable[[], Engine]) -> None:
    """Rows stored before 0006 keep their bytes and get their length, hash and a count of 1."""
    engine = engine_factory()
    upgrade(engine, "0005")
    with engine.begin() as connection:
        _old_rejection(connection, BINARY, T0)
        _old_rejection(connection, b"", T0 + 1)
    upgrade(engine, "0006")
    with session_scope(engine) as session:
        rows = session.exec(select(Rejection).order_by(col(Rejection.id))).all()
        got = [
            (r.raw, r.raw_length, r.raw_sha256, r.received_count, r.last_received_ms) for r in rows
        ]
    assert got == [
        (BINARY, len(BINARY), hashlib.sha256(BINARY).digest(), 1, T0),
        (b"", 0, hashlib.sha256(b"").digest(), 1, T0 + 1),
    ]


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic_command.downgrade(config, revision)


def test_migration_0006_downgrade_refuses_to_lose_counts(
    engine_factory: Callable[[], Engine],
) -> None:
    """Downgrading below 0006 runs on rows the old schema can hold, and refuses a counted row."""
    engine = engine_factory()
    upgrade(engine, "0006")
    with session_scope(engine) as session:
        session.add(_rejection())
    _downgrade(engine, "0005")
    assert current_revision(engine) == "0005"
    upgrade(engine, "0006")
    with session_scope(engine) as session:
        session.add(_rejection(received_count=2, last_received_ms=T0 + 5))
    with pytest.raises(RuntimeError, match="cannot downgrade below 0006"):
        _downgrade(engine, "0005")
    assert current_revision(engine) == "0006"


# --- serialized items: one product per GTIN + serial (migration 0008) ---------------------------

ITEM_GTIN = "06901234567892"


def _old_products(connection: Connection, rows: list[tuple[str, int | None, int]]) -> None:
    """Store products as revision 0007 could: ``(key, commissioned_index, created_ms)``."""
    connection.execute(
        text("INSERT INTO parties (id, name, kind, created_ms) VALUES ('farm-1', 'F', 'farm', 0)")
    )
    for index in sorted({i for _, i, _ in rows if i is not None}):
        connection.execute(
            text(
                'INSERT INTO log_entries ("index", kind, raw_sha256, entry, leaf_hash, '
                "received_ms) VALUES (:i, 'device_message', :h, :e, :h, 0)"
            ),
            {"i": index, "h": bytes(32), "e": b"e"},
        )
    for key, index, created in rows:
        connection.execute(
            text(
                'INSERT INTO products ("key", owner_party_id, created_ms, commissioned_index) '
                "VALUES (:k, 'farm-1', :c, :i)"
            ),
            {"k": key, "c": created, "i": index},
        )


def test_migration_0008_keeps_products_that_share_a_serial(
    engine_factory: Callable[[], Engine],
) -> None:
    """Products stored before 0008 with one GTIN + serial all stay; the first commissioned
    holds the item, the others are ranked after it, and a new one is refused by the index."""
    engine = engine_factory()
    upgrade(engine, "0007")
    g = ITEM_GTIN
    with engine.begin() as connection:
        _old_products(
            connection,
            [
                (f"01/{g}/10/L2/21/C001", 3, T0),  # commissioned second
                (f"01/{g}/10/L1/21/C001", 1, T0 + 5),  # commissioned first, created later
                (f"01/{g}/21/C001", None, T0),  # registered, never commissioned
                (f"01/{g}/10/L1/21/C002", 2, T0),  # alone: nothing to rank
                (f"01/{g}/10/L1", 0, T0),  # a lot: no item
                (f"01/{g}/10/21/21/S%2F1", 4, T0),  # a lot spelled "21", a "/" in the serial
            ],
        )
    upgrade(engine, "0008")
    with session_scope(engine) as session:
        got = {p.key: (p.item_key, p.item_rank) for p in session.exec(select(Product)).all()}
    assert got == {
        f"01/{g}/10/L1/21/C001": (f"01/{g}/21/C001", 0),
        f"01/{g}/10/L2/21/C001": (f"01/{g}/21/C001", 1),
        f"01/{g}/21/C001": (f"01/{g}/21/C001", 2),
        f"01/{g}/10/L1/21/C002": (f"01/{g}/21/C002", 0),
        f"01/{g}/10/L1": (None, 0),
        f"01/{g}/10/21/21/S%2F1": (f"01/{g}/21/S%2F1", 0),
    }
    for key in (f"01/{g}/10/L3/21/C001", f"01/{g}/21/C002", f"01/{g}/10/L9/21/S%2F1"):
        with pytest.raises(Conflict), session_scope(engine) as session:
            session.add(Product(key=key, owner_party_id="farm-1", created_ms=T0))


@pytest.mark.parametrize(
    "key",
    [
        f"01/{ITEM_GTIN}/10/L1",
        f"01/{ITEM_GTIN}/21/C7",
        f"01/{ITEM_GTIN}/10/L1/21/C7",
        f"01/{ITEM_GTIN}/10/21/21/21",
        f"01/{ITEM_GTIN}/10/A%2F21%2FB/21/%2F21%2F",
        f"01/{ITEM_GTIN}/10/21",
        f"01/{ITEM_GTIN}/21/10",
    ],
)
def test_database_item_key_agrees_with_product_key_item(engine: Engine, key: str) -> None:
    """The item the database derives from a stored key is ProductKey.item, for tricky keys too."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "F", "farm", T0)
        session.add(Product(key=key, owner_party_id="farm-1", created_ms=T0))
    with session_scope(engine) as session:
        row = session.get(Product, key)
        assert row is not None
        item = ProductKey.parse_canonical(key).item
        assert row.item_key == (None if item is None else item.path)


def test_new_products_of_one_serial_collide_in_the_database(engine: Engine) -> None:
    """Whatever writes the row, a second product of one GTIN + serial is refused by the index."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "F", "farm", T0)
        session.add(Product(key=f"01/{ITEM_GTIN}/21/C7", owner_party_id="farm-1", created_ms=T0))
        session.add(Product(key=f"01/{ITEM_GTIN}/10/L1", owner_party_id="farm-1", created_ms=T0))
        session.add(Product(key=f"01/{ITEM_GTIN}/10/L2", owner_party_id="farm-1", created_ms=T0))
    with pytest.raises(Conflict), session_scope(engine) as session:  # plain SQL, no ORM
        session.execute(
            text(
                'INSERT INTO products ("key", owner_party_id, created_ms) '
                "VALUES (:k, 'farm-1', 0)"
            ),
            {"k": f"01/{ITEM_GTIN}/10/L1/21/C7"},
        )


def test_migration_0008_downgrade_refuses_to_lose_serial_conflicts(
    engine_factory: Callable[[], Engine],
) -> None:
    """Downgrading below 0008 drops the item columns, and refuses while a serial_conflict
    rejection exists (revision 0007 cannot store that reason)."""
    engine = engine_factory()
    upgrade(engine, "0008")
    _downgrade(engine, "0007")
    assert current_revision(engine) == "0007"
    assert "item_key" not in {c["name"] for c in inspect(engine).get_columns("products")}
    upgrade(engine, "0008")
    with session_scope(engine) as session:
        session.add(_rejection(reason="serial_conflict"))
    with pytest.raises(RuntimeError, match="cannot downgrade below 0008"):
        _downgrade(engine, "0007")
    assert current_revision(engine) == "0008"


def test_migration_0013_admits_bad_rotation_and_downgrade_refuses_to_lose_it(
    engine_factory: Callable[[], Engine],
) -> None:
    """Revision 0012 cannot store the reason bad_rotation, 0013 can; downgrading keeps it."""
    engine = engine_factory()
    upgrade(engine, "0012")
    with pytest.raises(StorageError), session_scope(engine) as session:
        session.add(_rejection(reason="bad_rotation"))
    upgrade(engine, "0013")
    with session_scope(engine) as session:
        session.add(_rejection(reason="bad_rotation"))
    with pytest.raises(RuntimeError, match="cannot downgrade below 0013"):
        _downgrade(engine, "0012")
    assert current_revision(engine) == "0013"
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM rejections"))
    _downgrade(engine, "0012")
    assert current_revision(engine) == "0012"


# --- parties and tokens ------------------------------------------------------------------------


def test_create_party(engine: Engine) -> None:
    """A party is stored with its fields; a second one with the same id is a Conflict."""
    with session_scope(engine) as session:
        party = create_party(session, "farm-1", "  Green Farm ", "farm", T0)
        assert (party.id, party.name, party.kind, party.created_ms) == (
            "farm-1",
            "Green Farm",
            "farm",
            T0,
        )
    with pytest.raises(Conflict, match="exists"), session_scope(engine) as session:
        create_party(session, "farm-1", "Other", "packer", T0)


@pytest.mark.parametrize(
    ("party_id", "name", "kind"),
    [("Farm-1", "x", "farm"), ("ab", "x", "farm"), ("farm-1", "  ", "farm"), ("f-1", "x", "zoo")],
)
def test_create_party_invalid(engine: Engine, party_id: str, name: str, kind: str) -> None:
    """Bad ids, empty names and unknown kinds are refused before touching the database."""
    with pytest.raises(IdentifierError), session_scope(engine) as session:
        create_party(session, party_id, name, kind, T0)


def test_issue_and_find_token(engine: Engine) -> None:
    """A token is returned once, stored as its SHA-256 only, and resolves to role and party."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "Farm", "farm", T0)
        create_party(session, "agency-1", "Agency", "inspector", T0)
        farm = issue_token(session, "farm-1", T0)
        agency = issue_token(session, "agency-1", T0)
    assert farm.token.startswith("at_")
    assert len(farm.token) == 3 + 43  # 32 bytes in unpadded base64
    assert farm.role == "party"
    assert agency.role == "inspector"
    with session_scope(engine) as session:
        rows = session.exec(select(Token)).all()
        assert {row.token_hash for row in rows} == {
            hash_token(farm.token),
            hash_token(agency.token),
        }
        assert find_token(session, farm.token, T0) == ("party", "farm-1", farm.id)
        assert find_token(session, agency.token, T0) == ("inspector", "agency-1", agency.id)
        assert find_token(session, farm.token + "x", T0) is None
        assert find_token(session, "no-prefix", T0) is None


def test_revoked_token_is_not_found(engine: Engine) -> None:
    """A revoked token no longer resolves; revoking an unknown token is NotFound."""
    with session_scope(engine) as session:
        create_party(session, "farm-1", "Farm", "farm", T0)
        issued = issue_token(session, "farm-1", T0)
    with session_scope(engine) as session:
        revoke_token(session, issued.token, T0 + 1)
    with session_scope(engine) as session:
        assert find_token(session, issued.token, T0 + 1) is None
    with pytest.raises(NotFound), session_scope(engine) as session:
        revoke_token(session, "at_unknown", T0)


def test_issue_token_unknown_party(engine: Engine) -> None:
    """Issuing a token for an unknown party is NotFound."""
    with pytest.raises(NotFound), session_scope(engine) as session:
        issue_token(session, "nobody", T0)


# --- devices and keys --------------------------------------------------------------------------


def test_register_device(engine: Engine) -> None:
    """A device is stored with its first key: kid from the key, valid from now, open-ended."""
    public_key = seed(engine)
    with session_scope(engine) as session:
        device = get_device(session, "dev-1")
        assert (device.party_id, device.created_ms) == ("farm-1", T0)
        (key,) = device_keys(session, "dev-1")
        assert key.public_key == public_key
        assert key.kid == device_kid(public_key)
        assert (key.valid_from_ms, key.valid_until_ms, key.revoked_ms) == (T0, None, None)


def test_register_device_conflicts(engine: Engine) -> None:
    """An existing device id, or a key already used by any device, is a Conflict."""
    public_key = seed(engine)
    with pytest.raises(Conflict, match="exists"), session_scope(engine) as session:
        register_device(session, "dev-1", "farm-1", new_key(), T0)
    with pytest.raises(Conflict, match="registered already"), session_scope(engine) as session:
        register_device(session, "dev-2", "farm-1", public_key, T0)
    with session_scope(engine) as session:
        assert session.get(Device, "dev-2") is None


def test_register_device_unknown_party(engine: Engine) -> None:
    """A device of an unknown party is NotFound."""
    with pytest.raises(NotFound), session_scope(engine) as session:
        register_device(session, "dev-1", "nobody", new_key(), T0)


@pytest.mark.parametrize(
    "public_key",
    [bytes(32), b"\x01" + bytes(31), b"\xff" * 32, bytes(31), new_key() + b"\x00", b""],
    ids=["zero", "identity", "not-a-point", "short", "long", "empty"],
)
def test_register_device_bad_key(engine: Engine, public_key: bytes) -> None:
    """Keys that are not 32 bytes or not a prime-order Ed25519 point are refused."""
    seed(engine)
    with pytest.raises(KeyFileError), session_scope(engine) as session:
        register_device(session, "dev-2", "farm-1", public_key, T0)


def test_validate_public_key_accepts_real_keys() -> None:
    """A freshly generated Ed25519 key passes validation unchanged."""
    key = new_key()
    assert validate_public_key(key) == key


def test_register_device_bad_ids(engine: Engine) -> None:
    """An invalid device id is an IdentifierError."""
    seed(engine)
    with pytest.raises(IdentifierError), session_scope(engine) as session:
        register_device(session, "Dev_1", "farm-1", new_key(), T0)


def test_rotate_key_windows(engine: Engine) -> None:
    """After rotation at T the old key signs up to T-1, the new one from T less 5 min on."""
    old_key = seed(engine)
    rotated_at = T0 + 5_000
    fresh = new_key()
    with session_scope(engine) as session:
        new = rotate_key(session, "dev-1", fresh, rotated_at)
        assert (new.valid_from_ms, new.valid_until_ms) == (rotated_at, None)
    old_kid, new_kid = device_kid(old_key), device_kid(fresh)
    with session_scope(engine) as session:
        assert key_for(session, "dev-1", old_kid, T0).public_key == old_key
        assert key_for(session, "dev-1", old_kid, rotated_at - 1).public_key == old_key
        with pytest.raises(RevokedKey, match="rotated out"):
            key_for(session, "dev-1", old_kid, rotated_at)
        assert key_for(session, "dev-1", new_kid, rotated_at).public_key == fresh
        assert key_for(session, "dev-1", new_kid, rotated_at - 300_000).public_key == fresh
        with pytest.raises(RevokedKey, match="valid from"):
            key_for(session, "dev-1", new_kid, rotated_at - 300_001)
        history = device_keys(session, "dev-1")
        assert [k.public_key for k in history] == [old_key, fresh]
        assert history[0].valid_until_ms == rotated_at
        assert current_key(session, "dev-1").public_key == fresh


def test_rotate_key_errors(engine: Engine) -> None:
    """Rotating to a used key or into the past is a Conflict; an unknown device NotFound."""
    old_key = seed(engine)
    with pytest.raises(Conflict), session_scope(engine) as session:
        rotate_key(session, "dev-1", old_key, T0 + 1)
    with pytest.raises(NotFound), session_scope(engine) as session:
        rotate_key(session, "dev-9", new_key(), T0 + 1)
    with pytest.raises(Conflict, match="before"), session_scope(engine) as session:
        rotate_key(session, "dev-1", new_key(), T0 - 1)
    with pytest.raises(KeyFileError), session_scope(engine) as session:
        rotate_key(session, "dev-1", bytes(32), T0 + 1)
    with session_scope(engine) as session:
        assert len(device_keys(session, "dev-1")) == 1
        assert current_key(session, "dev-1").valid_until_ms is None


def test_revoke_current_key_boundary(engine: Engine) -> None:
    """A key revoked since R signs messages up to R-1 and is revoked_key from R on."""
    public_key = seed(engine)
    kid = device_kid(public_key)
    revoked_at = T0 + 60_000
    with session_scope(engine) as session:
        key = revoke_key(session, "dev-1", revoked_since_ms=revoked_at, reason="stolen")
        assert (key.revoked_ms, key.revoke_reason) == (revoked_at, "stolen")
    with session_scope(engine) as session:
        assert key_for(session, "dev-1", kid, revoked_at - 1).public_key == public_key
        with pytest.raises(RevokedKey, match="revoked since"):
            key_for(session, "dev-1", kid, revoked_at)


def test_revoke_rotated_key_by_kid(engine: Engine) -> None:
    """An old key can be revoked by kid inside its window; the current key stays valid."""
    old_key = seed(engine)
    fresh = new_key()
    with session_scope(engine) as session:
        rotate_key(session, "dev-1", fresh, T0 + 1_000)
        revoke_key(session, "dev-1", device_kid(old_key), revoked_since_ms=T0 + 500, reason="leak")
    with session_scope(engine) as session:
        assert key_for(session, "dev-1", device_kid(old_key), T0 + 499).public_key == old_key
        with pytest.raises(RevokedKey):
            key_for(session, "dev-1", device_kid(old_key), T0 + 500)
        assert key_for(session, "dev-1", device_kid(fresh), T0 + 1_000).public_key == fresh


def test_revoke_only_moves_earlier(engine: Engine) -> None:
    """Revoking again with a later time keeps the earlier time; an earlier time replaces it."""
    seed(engine)
    with session_scope(engine) as session:
        revoke_key(session, "dev-1", revoked_since_ms=T0 + 100, reason="a")
        assert revoke_key(session, "dev-1", revoked_since_ms=T0 + 200, reason="b").revoked_ms == (
            T0 + 100
        )
        key = revoke_key(session, "dev-1", revoked_since_ms=T0 + 50, reason="c")
        assert (key.revoked_ms, key.revoke_reason) == (T0 + 50, "c")


def test_revoke_unknown(engine: Engine) -> None:
    """Revoking a key of an unknown device or an unknown kid is NotFound."""
    seed(engine)
    with pytest.raises(NotFound), session_scope(engine) as session:
        revoke_key(session, "dev-9", revoked_since_ms=T0, reason="x")
    with pytest.raises(NotFound), session_scope(engine) as session:
        revoke_key(session, "dev-1", b"\x00" * 8, revoked_since_ms=T0, reason="x")


def test_key_for_unknown(engine: Engine) -> None:
    """An unknown kid, a kid of another device, or a malformed kid is unknown_key."""
    seed(engine)
    other = new_key()
    with session_scope(engine) as session:
        register_device(session, "dev-2", "farm-1", other, T0)
    with session_scope(engine) as session:
        with pytest.raises(UnknownKey):
            key_for(session, "dev-1", b"\x00" * 8, T0)
        with pytest.raises(UnknownKey):
            key_for(session, "dev-1", device_kid(other), T0)
        with pytest.raises(UnknownKey):
            key_for(session, "dev-1", b"\x00" * 7, T0)
        with pytest.raises(UnknownKey):
            key_for(session, "nobody", device_kid(other), T0)


def test_processes_migrating_a_fresh_database_at_once_all_succeed(db_url: str) -> None:
    """Four processes upgrade the same new database together (API workers starting side by
    side): each exits 0 and the schema is at the head once."""
    script = "import sys; from tracecore.storage import upgrade; upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen(  # noqa: S603 (this interpreter, a fixed script)
            [sys.executable, "-c", script, db_url], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    failures = []
    for process in processes:
        _, err = process.communicate(timeout=120)
        if process.returncode:
            failures.append(err[-2000:])
    assert not failures, failures[0]
    assert current_revision(db_url) == head_revision()
