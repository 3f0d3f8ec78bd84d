"""The stored product index (tracecore.storage.index), on SQLite and PostgreSQL.

A log of real entries (registrations, signed device messages chaining several products, a key
rotation and revocation, recalls, accesses) is checkpointed in rounds. After each round the
stored map must be the one a monitor rebuilds from the log alone, its root the one the newest
``index_root`` entry names, and its proofs must verify; an idle log gets no new root; a first
build in chunks equals one in a single step; and migration 0014 goes up and down safely.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from alembic import command as alembic_command
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session

from ingest.checkpointer import checkpoint_once
from tracecore import checkpoint as checkpoint_module
from tracecore import smt
from tracecore.checkpoint import make_checkpoint
from tracecore.cose import sign_message
from tracecore.errors import ProofError, StorageError
from tracecore.identifiers import ProductKey
from tracecore.indexstate import (
    DeviceState,
    ProductState,
    device_key,
    fold,
    parse_value,
    product_key,
)
from tracecore.keys import SignerKey, device_kid
from tracecore.logentry import (
    GENESIS_PREV,
    Access,
    ChainPosition,
    DeviceMessageEntry,
    DeviceRegistered,
    IndexRoot,
    KeyRevoked,
    KeyRotated,
    Recall,
    RegistryEntry,
    parse_any_entry,
)
from tracecore.merkle import leaf_hash
from tracecore.message import Event, Reading, Sensor
from tracecore.storage import create_party, register_device
from tracecore.storage import index as stored_index
from tracecore.storage.engine import session_scope
from tracecore.storage.index import plan_index
from tracecore.storage.logwriter import (
    append_registry_entry,
    checkpoint_transaction,
    hold_write_lock,
    log_session,
    next_log_index,
)
from tracecore.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from tracecore.storage.models import LogEntry

T0 = 1_795_000_000_000
ORIGIN = "agritrace.test/log"
LOG_KEY = SignerKey(ORIGIN, bytes(range(32)))
FARM = "gansu-hens-01"
FLOCK = ProductKey.parse("01/06901234567892/10/FLOCK7")
LOT = ProductKey.parse("01/06901234567892/10/L261127")
CARTON = ProductKey.parse("01/06901234567892/10/L261127/21/C0001")
CASE = ProductKey.parse("01/06901234567892/10/L261127/21/C0002")
NEVER_SEEN = ProductKey.parse("01/06901234567892/10/GHOST")
UNKNOWN = [
    product_key("01/06901234567892/10/NOBODY"),
    product_key("01/00000000000000/10/X"),
    device_key("no-such-device"),
]


def _key(label: str) -> SignerKey:
    return SignerKey(label, hashlib.sha256(label.encode()).digest())


@dataclass
class World:
    """Appends real entries to the stored log and remembers what the index must say."""

    engine: Engine
    keys: dict[str, SignerKey] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    heads: dict[ProductKey, tuple[int, int, bytes]] = field(default_factory=dict)
    recalls: dict[ProductKey, list[int]] = field(default_factory=dict)
    registry: dict[str, list[int]] = field(default_factory=dict)
    time: int = T0

    def _tick(self) -> int:
        self.time += 1_000
        return self.time

    def _registry(self, entry: RegistryEntry) -> int:
        with log_session(self.engine) as session:
            return append_registry_entry(session, entry, self.time)

    def register(self, device: str) -> None:
        """Register ``device`` of the farm with a fresh key, as the registry API does."""
        self.keys[device] = key = _key(device)
        now = self._tick()
        with log_session(self.engine) as session:
            if not self.registry:
                create_party(session, FARM, "Linxia Hens", "farm", T0)
            register_device(session, device, FARM, key.public_key, now)
            entry = DeviceRegistered(device, FARM, key.public_key, now, now)
            self.registry[device] = [append_registry_entry(session, entry, now)]

    def rotate(self, device: str) -> None:
        """Rotate ``device``'s key."""
        self.keys[device] = _key(f"{device}-{len(self.registry[device])}")
        now = self._tick()
        entry = KeyRotated(device, self.keys[device].public_key, now, now)
        self.registry[device].append(self._registry(entry))

    def revoke(self, device: str) -> None:
        """Revoke ``device``'s key."""
        now = self._tick()
        kid = device_kid(self.keys[device].public_key)
        self.registry[device].append(self._registry(KeyRevoked(device, kid, now, "lost", now)))

    def recall(self, *products: ProductKey) -> None:
        """Recall ``products``."""
        index = self._registry(Recall(products, "salmonella", "admin", self._tick()))
        for product in products:
            self.recalls.setdefault(product, []).append(index)

    def access(self) -> None:
        """Record an admin's read (an entry that changes no index key)."""
        self._registry(Access("admin", "admin", "GET /v1/x", "/v1/x", (), self._tick()))

    def message(
        self, device: str, *products: ProductKey, parents: tuple[ProductKey, ...] = ()
    ) -> int:
        """Append a signed device message about ``products``, chained; return its index."""
        self.seqs[device] = seq = self.seqs.get(device, 0) + 1
        now = self._tick()
        message: Reading | Event
        if parents:
            message = Event(device, seq, now, products, "commissioning", parents=parents)
        else:
            message = Reading(device, seq, now, products, (Sensor("Temperature", 5.5, "CEL"),))
        raw = sign_message(message, self.keys[device].signing_key)
        chains = []
        for product in products:
            pseq, _, prev = self.heads.get(product, (0, -1, GENESIS_PREV))
            chains.append(ChainPosition(product, pseq + 1, prev))
        entry = DeviceMessageEntry(
            hashlib.sha256(raw).digest(), device, seq, now + 1, tuple(chains)
        )
        data = entry.to_bytes()
        with log_session(self.engine) as session:
            index = next_log_index(session)
            session.add(
                LogEntry(
                    index=index,
                    kind="device_message",
                    raw=raw,
                    raw_sha256=hashlib.sha256(raw).digest(),
                    entry=data,
                    leaf_hash=leaf_hash(data),
                    device_id=device,
                    seq=seq,
                    received_ms=now + 1,
                )
            )
        for position in chains:
            self.heads[position.product] = (position.pseq, index, leaf_hash(data))
        return index

    def checkpoint(self) -> int | None:
        """Run one checkpoint round (as the checkpointer does); the checkpoint's size."""
        with checkpoint_transaction(self.engine) as session:
            assert session is not None
            checkpoint = make_checkpoint(session, ORIGIN, LOG_KEY, self._tick())
            return None if checkpoint is None else checkpoint.size


def _log(engine: Engine) -> list[tuple[int, str, bytes]]:
    with session_scope(engine) as session:
        rows = session.connection().execute(
            text('SELECT "index", kind, entry FROM log_entries ORDER BY "index"')
        )
        return [(int(i), str(kind), bytes(entry)) for i, kind, entry in rows]


def _replayed_root(
    log: list[tuple[int, str, bytes]], size: int
) -> tuple[bytes, dict[bytes, bytes]]:
    """What a monitor computes from entries [0, size) alone: the root and each value's bytes."""
    values = fold((i, parse_any_entry(entry), entry) for i, _, entry in log[:size])
    encoded = {key: value.to_bytes() for key, value in values.items()}
    leaves = {key: smt.value_hash(v) for key, v in encoded.items()}
    return smt.root_of(leaves), encoded


def _index_roots(log: list[tuple[int, str, bytes]]) -> list[tuple[int, IndexRoot]]:
    found = []
    for index, kind, entry in log:
        parsed = parse_any_entry(entry)
        assert (kind == "index_root") == isinstance(parsed, IndexRoot), index
        if isinstance(parsed, IndexRoot):
            found.append((index, parsed))
    return found


def _check(world: World, checkpoint_size: int | None) -> bytes:
    """The stored map equals the replay of the log, and its root is the newest index root's."""
    log = _log(world.engine)
    roots = _index_roots(log)
    index, newest = roots[-1]
    assert index == len(log) - 1  # the round's root is the newest entry
    assert checkpoint_size == len(log)  # and the checkpoint covers it
    assert newest.size == index  # over every entry before it
    expected, encoded = _replayed_root(log, newest.size)
    assert newest.root == expected
    with session_scope(world.engine) as session:
        stored = stored_index.latest_index_root(session)
        assert stored is not None
        assert (stored.index, stored.root) == (index, newest)
        top = stored_index.read_nodes(session, [smt.node_path(0, b"")])
        assert top[smt.node_path(0, b"")].hash == expected
        rows = session.connection().execute(text("SELECT key, value FROM index_values"))
        assert {bytes(k): bytes(v) for k, v in rows} == encoded
    _check_proofs(world, expected)
    return expected


def _check_proofs(world: World, root: bytes) -> None:
    """Present keys prove their values, which say what the world appended; unknown keys prove
    their absence."""
    products = set(world.heads) | set(world.recalls)
    keys = [product_key(p.path) for p in products] + [device_key(d) for d in world.registry]
    with session_scope(world.engine) as session:
        proofs = stored_index.index_proofs(session, [*keys, *UNKNOWN])
    for product in products:
        value, proof = proofs[product_key(product.path)]
        assert value is not None
        smt.verify_proof(root, product_key(product.path), value, proof)
        state = parse_value(value)
        assert isinstance(state, ProductState)
        assert state.product == product.path
        head = (
            None if state.chain is None else (state.chain.pseq, state.chain.index, state.chain.leaf)
        )
        assert head == world.heads.get(product)
        assert list(state.recalls) == world.recalls.get(product, [])
        with pytest.raises(ProofError):
            smt.verify_proof(root, product_key(product.path), None, proof)
    for device, indexes in world.registry.items():
        value, proof = proofs[device_key(device)]
        assert value is not None
        smt.verify_proof(root, device_key(device), value, proof)
        assert parse_value(value) == DeviceState(device, tuple(indexes))
    for key in UNKNOWN:
        value, proof = proofs[key]
        assert value is None
        smt.verify_proof(root, key, None, proof)
        with pytest.raises(ProofError):
            smt.verify_proof(root, key, b"", proof)


def test_rounds_keep_the_stored_map_equal_to_the_replay(engine: Engine) -> None:
    """Each checkpoint round folds the new entries: stored root = replayed root = logged root;
    proofs verify; an idle log gets no new root and no checkpoint."""
    world = World(engine)
    for device in ("hens01-collect", "hens01-climate", "pack-line-1"):
        world.register(device)
    world.message("hens01-collect", FLOCK)
    world.message("hens01-collect", LOT, parents=(FLOCK,))
    world.message("hens01-climate", LOT)
    world.message("hens01-climate", FLOCK, LOT)
    first = _check(world, world.checkpoint())

    world.message("pack-line-1", CARTON, CASE, parents=(LOT,))
    world.rotate("hens01-climate")
    world.message("hens01-climate", LOT)
    world.recall(LOT, NEVER_SEEN)
    world.access()
    second = _check(world, world.checkpoint())
    assert second != first

    size = len(_log(engine))
    assert world.checkpoint() is None  # idle: no new root, no new checkpoint
    assert world.checkpoint() is None
    assert len(_log(engine)) == size
    assert _check(world, size) == second

    world.access()  # an entry that changes no key still gets a root over the grown log
    assert _check(world, world.checkpoint()) == second

    world.revoke("pack-line-1")
    world.recall(LOT)
    world.message("pack-line-1", CASE)
    third = _check(world, world.checkpoint())
    assert third not in (first, second)
    log = _log(engine)
    assert [index for index, _ in _index_roots(log)] == [7, 13, 15, 19]


def test_entries_appended_while_the_root_waits_are_folded_next_round(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message appended between the fold and the root's append (ingest does not wait for the
    fold) lands before the root, outside its size; the next round folds it."""
    world = World(engine)
    world.register("hens01-collect")
    world.message("hens01-collect", LOT)
    real_lock = hold_write_lock

    def append_then_lock(session: Session) -> None:
        # What a concurrent ingest commit does on PostgreSQL; here in the round's transaction.
        monkeypatch.setattr(stored_index, "hold_write_lock", real_lock)
        _sneak_message(session, world)
        real_lock(session)

    monkeypatch.setattr(stored_index, "hold_write_lock", append_then_lock)
    with checkpoint_transaction(engine) as session:
        assert session is not None
        checkpoint = make_checkpoint(session, ORIGIN, LOG_KEY, T0)
        assert checkpoint is not None
    log = _log(engine)
    [(index, root)] = _index_roots(log)
    assert (index, root.size, checkpoint.size) == (3, 2, 4)  # the sneaked message is entry 2
    assert root.root == _replayed_root(log, 2)[0]
    assert world.checkpoint() == 5  # the next round's root covers the sneaked message
    [_, (index, root)] = _index_roots(_log(engine))
    assert (index, root.size) == (4, 4)
    assert root.root == _replayed_root(_log(engine), 4)[0]
    assert root.root != _replayed_root(log, 2)[0]


def test_an_entry_after_an_idle_round_is_signed_and_folded_by_the_next_root(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message committed after an idle round found nothing to fold (ingest does not wait for
    it) is signed beyond the last root; the next round's root covers it."""
    world = World(engine)
    world.register("hens01-collect")
    world.message("hens01-collect", LOT)
    assert world.checkpoint() == 3
    real_update = stored_index.update_index

    def update_then_sneak(
        session: Session,
        now_ms: int,
        *,
        min_interval_ms: int = 0,
        plan: stored_index.IndexPlan | None = None,
    ) -> stored_index.StoredRoot | None:
        appended = real_update(session, now_ms, min_interval_ms=min_interval_ms, plan=plan)
        assert appended is None  # idle
        _sneak_message(session, world)  # what a concurrent ingest commit does on PostgreSQL
        return appended

    monkeypatch.setattr(checkpoint_module, "update_index", update_then_sneak)
    with checkpoint_transaction(engine) as session:
        assert session is not None
        signed = make_checkpoint(session, ORIGIN, LOG_KEY, T0)
    assert signed is not None
    assert signed.size == 4  # the sneaked message is signed, beyond the root at 2
    monkeypatch.setattr(checkpoint_module, "update_index", real_update)
    assert _check(world, world.checkpoint()) == _replayed_root(_log(engine), 4)[0]
    assert [index for index, _ in _index_roots(_log(engine))] == [2, 4]


def _sneak_message(session: Session, world: World) -> None:
    """Append a message about CARTON in ``session``, bypassing :meth:`World.message`'s session."""
    pseq, _, prev = world.heads.get(CARTON, (0, -1, GENESIS_PREV))
    raw = b"sneaked"
    entry = DeviceMessageEntry(
        hashlib.sha256(raw).digest(),
        "hens01-collect",
        99,
        T0,
        (ChainPosition(CARTON, pseq + 1, prev),),
    )
    data = entry.to_bytes()
    index = next_log_index(session)
    session.add(
        LogEntry(
            index=index,
            kind="device_message",
            raw=raw,
            raw_sha256=hashlib.sha256(raw).digest(),
            entry=data,
            leaf_hash=leaf_hash(data),
            device_id="hens01-collect",
            seq=99,
            received_ms=T0,
        )
    )
    session.flush()


def test_a_log_that_touches_no_key_gets_the_empty_root(engine: Engine) -> None:
    """Accesses alone change no key: the root over them is the empty map's."""
    world = World(engine)
    world.access()
    world.access()
    assert world.checkpoint() == 3
    [(index, root)] = _index_roots(_log(engine))
    assert (index, root.size, root.root) == (2, 2, smt.EMPTY)


def _big_world(engine: Engine) -> World:
    world = World(engine)
    for device in ("hens01-collect", "hens01-climate"):
        world.register(device)
    for n in range(6):
        world.message("hens01-collect", LOT if n % 2 else FLOCK)
        world.message("hens01-climate", FLOCK, LOT)
        if n == 2:
            world.recall(FLOCK)
            world.access()
            world.access()
            world.access()
    world.message("hens01-climate", CARTON, parents=(LOT,))
    for _ in range(4):  # the last chunks touch no key
        world.access()
    return world


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_a_first_build_in_chunks_equals_one_step(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """An existing log much longer than INDEX_CHUNK (an upgrade): the chunked first build gives
    the root of the log replayed whole, and the same stored map."""
    world = _big_world(engine)
    expected, encoded = _replayed_root(_log(engine), len(_log(engine)))
    monkeypatch.setattr(stored_index, "INDEX_CHUNK", chunk)
    assert _check(world, world.checkpoint()) == expected
    with session_scope(engine) as session:
        nodes = session.connection().execute(text("SELECT path, leaf, a, b FROM index_nodes"))
        chunked = {bytes(p): (bool(leaf), bytes(a), bytes(b)) for p, leaf, a, b in nodes}
    # The same map built in one step, in memory: the same nodes, not only the same root.
    tree = smt.MemoryTree()
    tree.apply({key: smt.value_hash(v) for key, v in encoded.items()})
    assert tree.root == expected
    # Chunked updates leave superseded interior nodes nowhere: every stored path is a node of
    # the final tree (a leaf pushed down leaves an interior node in its old place).
    assert chunked == {
        path: (isinstance(node, smt.Leaf), *_columns(node)) for path, node in tree.nodes.items()
    }


def _columns(node: smt.Node) -> tuple[bytes, bytes]:
    return (node.key, node.value_hash) if isinstance(node, smt.Leaf) else (node.left, node.right)


# --- migration 0014 ----------------------------------------------------------------------------


def _downgrade(engine: Engine, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        alembic_command.downgrade(config, revision)


def _insert_root(engine: Engine, index: int) -> None:
    data = IndexRoot(size=index, root=bytes(32), time=T0).to_bytes()
    with session_scope(engine) as session:
        session.connection().execute(
            text(
                'INSERT INTO log_entries ("index", kind, raw, raw_sha256, entry, leaf_hash, '
                "received_ms) VALUES (:i, 'index_root', NULL, :sha, :e, :leaf, :t)"
            ),
            {
                "i": index,
                "sha": hashlib.sha256(data).digest(),
                "e": data,
                "leaf": leaf_hash(data),
                "t": T0,
            },
        )


def test_migration_0014_up_and_down(engine_factory: Callable[[], Engine]) -> None:
    """0013 refuses index_root entries and has no index tables; 0014 adds both; downgrading
    drops them on a log without index roots, and refuses (changing nothing) on one with."""
    engine = engine_factory()
    upgrade(engine, "0013")
    with pytest.raises(StorageError):
        _insert_root(engine, 0)
    assert not {"index_nodes", "index_values"} & set(inspect(engine).get_table_names())
    upgrade(engine, "0014")
    assert {"index_nodes", "index_values"} <= set(inspect(engine).get_table_names())
    _downgrade(engine, "0013")
    assert current_revision(engine) == "0013"
    assert not {"index_nodes", "index_values"} & set(inspect(engine).get_table_names())
    with pytest.raises(StorageError):
        _insert_root(engine, 0)

    upgrade(engine, "0014")
    world = World(engine)
    world.register("hens01-collect")
    world.message("hens01-collect", LOT)
    upgrade(engine)  # to the newest revision, for the checkpoint round
    assert world.checkpoint() == 3
    before = _log(engine)
    with pytest.raises(RuntimeError, match="cannot downgrade below 0014"):
        _downgrade(engine, "0013")
    assert current_revision(engine) == head_revision()
    assert _log(engine) == before
    _check(world, 3)  # the index tables and their rows are still there
    # The stored tables refuse malformed rows.
    with pytest.raises(StorageError), session_scope(engine) as session:
        session.connection().execute(
            text("INSERT INTO index_values (key, value) VALUES (:k, :v)"), {"k": b"short", "v": b""}
        )
    with pytest.raises(StorageError), session_scope(engine) as session:
        session.connection().execute(
            text("INSERT INTO index_nodes (path, leaf, a, b) VALUES (:p, :l, :a, :b)"),
            {"p": b"\x00\x01", "l": False, "a": bytes(32), "b": bytes(31)},
        )


def test_a_fold_planned_before_the_lock_equals_one_made_under_it(engine: Engine) -> None:
    """The checkpointer's round (a plan read first on SQLite) stores the replayed map."""
    world = World(engine)
    world.register("hens01-collect")
    world.message("hens01-collect", FLOCK)
    world.message("hens01-collect", LOT, parents=(FLOCK,))
    made = checkpoint_once(engine, LOG_KEY, ORIGIN, T0 + 10**6)
    assert made is not None
    world.message("hens01-collect", LOT)
    world.recall(LOT)
    made = checkpoint_once(engine, LOG_KEY, ORIGIN, T0 + 10**6 + 1)
    assert made is not None
    _check(world, made.size)
    assert [index for index, _ in _index_roots(_log(engine))] == [3, 6]


def test_a_stale_plan_is_not_written(engine: Engine) -> None:
    """A plan made before another round logged a root is dropped; the fold is made afresh."""
    world = World(engine)
    world.register("hens01-collect")
    world.message("hens01-collect", LOT)
    world.checkpoint()
    world.message("hens01-collect", LOT)
    with session_scope(engine) as session:
        stale = plan_index(session, T0 + 10**6)
    assert stale is not None
    world.message("hens01-collect", CARTON, parents=(LOT,))
    world.checkpoint()  # another round: a root over all of it
    world.recall(CARTON)
    with checkpoint_transaction(engine) as session:
        assert session is not None
        made = make_checkpoint(session, ORIGIN, LOG_KEY, T0 + 10**6, index_plan=stale)
    assert made is not None
    root = _check(world, made.size)
    (_, last) = _index_roots(_log(engine))[-1]
    assert (last.size, last.root) == (made.size - 1, root)


def test_roots_wait_for_the_interval_but_not_for_a_clock_that_went_back(engine: Engine) -> None:
    """AGRITRACE_INDEX_SECONDS: checkpoints go on between roots; a stepped-back clock never
    holds the next root back."""
    world = World(engine)
    world.register("hens01-collect")
    world.message("hens01-collect", LOT)

    def round_at(now_ms: int) -> int | None:
        with checkpoint_transaction(engine) as session:
            assert session is not None
            made = make_checkpoint(session, ORIGIN, LOG_KEY, now_ms, index_interval_ms=30_000)
            return None if made is None else made.size

    start = T0 + 10**6
    assert round_at(start) == 3  # registration, message, the first root
    world.message("hens01-collect", LOT)
    assert round_at(start + 5_000) == 4  # signed, no new root within 30 s
    assert len(_index_roots(_log(engine))) == 1
    assert round_at(start + 31_000) == 5  # the root over it
    world.message("hens01-collect", LOT)
    assert round_at(start - 60_000) == 7  # the clock went back: the root is not held
    roots = _index_roots(_log(engine))
    assert [index for index, _ in roots] == [2, 4, 6]
    _check(world, 7)
