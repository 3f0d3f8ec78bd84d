"""The tables of agritrace (SQLModel, portable across SQLite and PostgreSQL).

Conventions (docs/storage.md explains each table):

- times are integers, milliseconds since the Unix epoch, in ``BigInteger`` columns named ``*_ms``:
  the same on SQLite and PostgreSQL, and no time-zone ambiguity;
- binary values (COSE bytes, hashes, keys) are ``LargeBinary`` (BLOB / bytea), stored byte-exact;
- every constraint and index has an explicit name, so that the Alembic revisions and the models
  agree on both engines.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from tracecore.errors import RejectReason

__all__ = [
    "ID_LENGTH",
    "ITEM_KEY_SQL",
    "PARTY_KINDS",
    "PRODUCT_KEY_LENGTH",
    "REGISTRY_WHERE",
    "REJECTION_PREFIX_BYTES",
    "TOKEN_ROLES",
    "AccessParty",
    "AccessRecord",
    "ChainLink",
    "Checkpoint",
    "ComplaintAnswer",
    "ConsoleSession",
    "ContractQueue",
    "ContractResult",
    "Cosignature",
    "Device",
    "DeviceKey",
    "Feedback",
    "IndexNode",
    "IndexValueRow",
    "LogEntry",
    "MerkleNode",
    "ParkedMessage",
    "ParkedProduct",
    "Party",
    "Product",
    "ProductParent",
    "ProvisioningFile",
    "Receipt",
    "Rejection",
    "Scan",
    "ScanClient",
    "SignIn",
    "Token",
]

#: Longest device or party id (design.md, "Identifiers": ``[a-z0-9-]{3,64}``).
ID_LENGTH: Final = 64
#: Longest stored product key (a Digital Link path with percent-encoded lot and serial).
PRODUCT_KEY_LENGTH: Final = 255
#: How much of a ``too_large`` payload a rejection keeps (docs/storage.md, "rejections"): enough
#: to see what was sent (a COSE header, the start of a text), never the megabytes.
REJECTION_PREFIX_BYTES: Final = 1024
#: The kinds of party.
PARTY_KINDS: Final = ("farm", "packer", "processor", "carrier", "retailer", "lab", "inspector")
#: The roles a stored token can carry (the admin token is a setting, never stored).
TOKEN_ROLES: Final = ("party", "inspector")
#: Kinds of log entry: device messages, and the registry facts an answer depends on
#: (design.md: "Device registrations, key rotations and revocations, recalls and inspector
#: statements are log entries too").
LOG_ENTRY_KINDS: Final = (
    "device_message",
    "device_registered",
    "key_rotated",
    "key_revoked",
    "recall",
    "statement",
    "access",
    "index_root",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    """Return the SQL text ``column IN ('a', 'b', ...)`` for a check constraint."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Party(SQLModel, table=True):
    """A farm, packer, processor, carrier, retailer, lab or inspection agency."""

    __tablename__ = "parties"
    __table_args__ = (CheckConstraint(_in("kind", PARTY_KINDS), name="ck_parties_kind"),)

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    name: str = Field(sa_column=Column(Text, nullable=False))
    kind: str = Field(sa_column=Column(String(16), nullable=False))
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # The public profile (docs/registry-api.md): shown on product and stall pages beside the
    # verified party id. ``name`` is the Chinese (or only) name.
    name_en: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    place: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    place_en: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    licence: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Token(SQLModel, table=True):
    """A bearer token of a party or inspector, stored as the SHA-256 of its text only.

    It is accepted from ``created_ms`` until ``expires_ms`` (excluded) unless ``revoked_ms`` is
    set (docs/registry-api.md, "Token lifetime and revocation"). ``id`` names it in the API and
    the CLI; the text itself is shown once, at issue.
    """

    __tablename__ = "tokens"
    __table_args__ = (
        CheckConstraint(_in("role", TOKEN_ROLES), name="ck_tokens_role"),
        UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
        CheckConstraint("length(token_hash) = 32", name="ck_tokens_token_hash_length"),
        CheckConstraint("expires_ms > created_ms", name="ck_tokens_expiry"),
        Index("ix_tokens_party_id", "party_id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    party_id: str | None = Field(
        default=None,
        sa_column=Column(String(ID_LENGTH), ForeignKey("parties.id"), nullable=True),
    )
    role: str = Field(sa_column=Column(String(16), nullable=False))
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Tokens issued before migration 0007 got the upgrade time plus 90 days (docs/storage.md).
    expires_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    revoked_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class Device(SQLModel, table=True):
    """A signing device (gateway, sensor, scale, scanner) owned by one party."""

    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_party_id", "party_id"),)

    id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))
    party_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("parties.id"), nullable=False)
    )
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Where the device is, as the party names it ("冷库", "cold store"): chart legends.
    place: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    place_en: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class DeviceKey(SQLModel, table=True):
    """One Ed25519 public key of a device and the time window in which it may sign.

    A key signs messages whose device time ``t`` satisfies ``valid_from_ms - 5 min <= t`` (the
    clock tolerance of :func:`tracecore.keys.key_window_refusal`) and ``t < valid_until_ms``
    (when set, i.e. rotated out) and ``t < revoked_ms`` (when set, i.e. compromised since then).
    """

    __tablename__ = "device_keys"
    __table_args__ = (
        UniqueConstraint("device_id", "kid", name="uq_device_keys_device_id_kid"),
        UniqueConstraint("public_key", name="uq_device_keys_public_key"),
        CheckConstraint("length(kid) = 8", name="ck_device_keys_kid_length"),
        CheckConstraint("length(public_key) = 32", name="ck_device_keys_public_key_length"),
        CheckConstraint(
            "valid_until_ms IS NULL OR valid_until_ms >= valid_from_ms",
            name="ck_device_keys_window",
        ),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    device_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("devices.id"), nullable=False)
    )
    kid: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    public_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    valid_from_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    valid_until_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revoked_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revoke_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class ProvisioningFile(SQLModel, table=True):
    """The one download of a device's provisioning file (docs/gateway.md).

    Registering a device in the console issues a random token; the row keeps its SHA-256
    (``token_hash``), the device and key it names (``kid``), and who registered it
    (``issued_to``: the party id, or ``admin``), the only one who may download it. ``used_ms``
    is set by the first download; a second one is refused (410 Gone).
    """

    __tablename__ = "provisioning_files"
    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_provisioning_files_token_hash"),
        CheckConstraint("length(token_hash) = 32", name="ck_provisioning_files_token_hash_length"),
        CheckConstraint("length(kid) = 8", name="ck_provisioning_files_kid_length"),
        Index("ix_provisioning_files_device_id", "device_id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    token_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    device_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("devices.id"), nullable=False)
    )
    kid: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    issued_to: str = Field(sa_column=Column(String(ID_LENGTH), nullable=False))
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    used_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


#: The predicate of the partial index ``ix_log_entries_registry``; a query that should use the
#: index repeats it word for word (SQLite only uses a partial index whose WHERE terms it finds).
REGISTRY_WHERE = "kind <> 'device_message'"


class LogEntry(SQLModel, table=True):
    """One leaf of the Merkle log; ``index`` is assigned by the single-writer sequencer."""

    __tablename__ = "log_entries"
    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_log_entries_device_id_seq"),
        CheckConstraint(_in("kind", LOG_ENTRY_KINDS), name="ck_log_entries_kind"),
        CheckConstraint('"index" >= 0', name="ck_log_entries_index"),
        CheckConstraint("length(raw_sha256) = 32", name="ck_log_entries_raw_sha256_length"),
        CheckConstraint("length(leaf_hash) = 32", name="ck_log_entries_leaf_hash_length"),
        Index("ix_log_entries_step_time_ms", "step", "time_ms"),
        # Registry entries and recalls, which every bundle reads, among millions of device
        # messages: a partial index holds only them, so ingest pays nothing for it.
        Index(
            "ix_log_entries_registry",
            "kind",
            "device_id",
            "index",
            sqlite_where=text(REGISTRY_WHERE),
            postgresql_where=text(REGISTRY_WHERE),
        ),
    )

    index: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    kind: str = Field(sa_column=Column(String(32), nullable=False))
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    raw_sha256: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    entry: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    device_id: str | None = Field(
        default=None,
        sa_column=Column(String(ID_LENGTH), ForeignKey("devices.id"), nullable=True),
    )
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    received_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Search columns copied from the device message at ingest (the business step of an event,
    # the device's time): for the inspector API's queries only, never evidence.
    step: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    time_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


# The number of "/" in the key: 3 for 01/{gtin}/10/{lot} and 01/{gtin}/21/{serial}, 5 for
# 01/{gtin}/10/{lot}/21/{serial} (a "/" inside a lot or serial is always %2F in a stored key).
_SLASHES = """(length("key") - length(replace("key", '/', '')))"""
#: The item a stored product key names, computed by the database from the key itself: GTIN +
#: serial without the lot, spelled ``01/{gtin}/21/{serial}`` (GS1 General Specifications
#: §3.5.2; :attr:`tracecore.identifiers.ProductKey.item`), NULL for a lot. The key is canonical,
#: so the GTIN is characters 4-17 and the serial is the last segment (``rtrim`` with every
#: character of the key but "/" strips that segment). Only functions that SQLite and PostgreSQL
#: both have, all deterministic, so it can be a generated column on both.
ITEM_KEY_SQL: Final = (
    f"CASE WHEN {_SLASHES} = 5 "
    """THEN substr("key", 1, 17) || '/21/' || """
    """substr("key", length(rtrim("key", replace("key", '/', ''))) + 1) """
    f"""WHEN {_SLASHES} = 3 AND substr("key", 18, 4) = '/21/' THEN "key" END"""
)


class Product(SQLModel, table=True):
    """A traceable unit (lot, carton, animal, carcass, pallet) keyed by its Digital Link path.

    ``item_key`` is the GS1 identity of a serialized product (GTIN + serial, no lot), generated
    by the database; the unique index on (``item_key``, ``item_rank``) makes one GTIN + serial
    one product whatever its lot (docs/identifiers.md). ``item_rank`` is 0 except for products
    that shared a GTIN + serial with an earlier one before migration 0008 made the rule: those
    keep their rows and are numbered 1, 2, … in order of commissioning.
    """

    __tablename__ = "products"
    __table_args__ = (
        Index("ix_products_owner_party_id", "owner_party_id"),
        Index("uq_products_item_key_item_rank", "item_key", "item_rank", unique=True),
        CheckConstraint("item_rank >= 0", name="ck_products_item_rank"),
    )

    key: str = Field(sa_column=Column(String(PRODUCT_KEY_LENGTH), primary_key=True))
    kind: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    owner_party_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("parties.id"), nullable=False)
    )
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    commissioned_index: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, ForeignKey("log_entries.index"), nullable=True),
    )
    # Custody (the ingest rights rules): the party that holds the product now, and the party a
    # shipping event named as destination, until that party's receiving event.
    holder_party_id: str | None = Field(
        default=None,
        sa_column=Column(String(ID_LENGTH), ForeignKey("parties.id"), nullable=True),
    )
    pending_party_id: str | None = Field(
        default=None,
        sa_column=Column(String(ID_LENGTH), ForeignKey("parties.id"), nullable=True),
    )
    item_key: str | None = Field(
        default=None,
        sa_column=Column(String(PRODUCT_KEY_LENGTH), Computed(ITEM_KEY_SQL), nullable=True),
    )
    item_rank: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class ProductParent(SQLModel, table=True):
    """An edge of the lineage graph: ``product_key`` came from ``parent_key``."""

    __tablename__ = "product_parents"
    __table_args__ = (
        Index("ix_product_parents_parent_key", "parent_key"),
        CheckConstraint("product_key <> parent_key", name="ck_product_parents_not_self"),
    )

    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), primary_key=True)
    )
    parent_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), primary_key=True)
    )


class ChainLink(SQLModel, table=True):
    """A product's position ``pseq`` in its own hash chain and the entry at that position."""

    __tablename__ = "chain_links"
    __table_args__ = (
        UniqueConstraint("product_key", "log_index", name="uq_chain_links_product_key_log_index"),
        Index("ix_chain_links_log_index", "log_index"),
        CheckConstraint("pseq >= 1", name="ck_chain_links_pseq"),
        CheckConstraint("length(prev_hash) = 32", name="ck_chain_links_prev_hash_length"),
    )

    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), primary_key=True)
    )
    pseq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    log_index: int = Field(
        sa_column=Column(BigInteger, ForeignKey("log_entries.index"), nullable=False)
    )
    prev_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Rejection(SQLModel, table=True):
    """A refused device message with the reason (nothing is dropped silently).

    ``raw`` is the payload byte-exact, except for a ``too_large`` one (over the ingest limit,
    never read): then it is the first :data:`REJECTION_PREFIX_BYTES` bytes only. ``raw_length``
    and ``raw_sha256`` always describe the whole payload as received. The same bytes refused
    again on the same topic for the same reason add to ``received_count`` and move
    ``last_received_ms`` instead of adding a row (docs/storage.md); ``received_ms`` and
    ``detail`` stay those of the first refusal.
    """

    __tablename__ = "rejections"
    __table_args__ = (
        Index("ix_rejections_reason_received_ms", "reason", "received_ms"),
        Index("ix_rejections_device_id", "device_id"),
        Index("ix_rejections_raw_sha256", "raw_sha256"),
        CheckConstraint(
            _in("reason", tuple(r.value for r in RejectReason)), name="ck_rejections_reason"
        ),
        CheckConstraint("length(raw_sha256) = 32", name="ck_rejections_raw_sha256_length"),
        CheckConstraint("length(raw) <= raw_length", name="ck_rejections_raw_length"),
        CheckConstraint("received_count >= 1", name="ck_rejections_received_count"),
        CheckConstraint("last_received_ms >= received_ms", name="ck_rejections_last_received_ms"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    topic: str = Field(sa_column=Column(Text, nullable=False))
    reason: str = Field(sa_column=Column(String(32), nullable=False))
    detail: str = Field(sa_column=Column(Text, nullable=False))
    device_id: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    seq: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    received_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    raw_length: int = Field(sa_column=Column(BigInteger, nullable=False))
    raw_sha256: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    received_count: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_received_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class Receipt(SQLModel, table=True):
    """The signed receipt sent to a device for (device, seq), kept so resends get the same one."""

    __tablename__ = "receipts"

    device_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("devices.id"), primary_key=True)
    )
    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    log_index: int = Field(
        sa_column=Column(BigInteger, ForeignKey("log_entries.index"), nullable=False)
    )
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ParkedMessage(SQLModel, table=True):
    """A verified device message that names a product not yet commissioned.

    It waits (design.md: up to 24 h) for the commissioning event of every product in
    :class:`ParkedProduct`, then is sequenced as if it had just arrived, or is rejected as
    ``unknown_product`` when ``expires_ms`` passes. The raw bytes are kept exactly.
    """

    __tablename__ = "parked_messages"
    __table_args__ = (
        UniqueConstraint("device_id", "seq", name="uq_parked_messages_device_id_seq"),
        Index("ix_parked_messages_expires_ms", "expires_ms"),
        CheckConstraint("length(raw_sha256) = 32", name="ck_parked_messages_raw_sha256_length"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    device_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("devices.id"), nullable=False)
    )
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    raw_sha256: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    topic: str = Field(sa_column=Column(Text, nullable=False))
    received_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class ParkedProduct(SQLModel, table=True):
    """A product a parked message waits for."""

    __tablename__ = "parked_products"
    __table_args__ = (Index("ix_parked_products_product_key", "product_key"),)

    parked_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("parked_messages.id", ondelete="CASCADE"), primary_key=True
        )
    )
    product_key: str = Field(sa_column=Column(String(PRODUCT_KEY_LENGTH), primary_key=True))


class MerkleNode(SQLModel, table=True):
    """The hash of a complete subtree of the log: leaves ``[idx * 2**level, (idx+1) * 2**level)``.

    Level 0 is the leaf hashes themselves (kept in :class:`LogEntry`), so rows start at level 1.
    With every complete subtree stored, any RFC 9162 proof needs O(log n) reads.
    """

    __tablename__ = "merkle_nodes"
    __table_args__ = (
        CheckConstraint("level >= 1", name="ck_merkle_nodes_level"),
        CheckConstraint("length(hash) = 32", name="ck_merkle_nodes_hash_length"),
    )

    level: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class IndexNode(SQLModel, table=True):
    """A stored subtree of the product index (:mod:`tracecore.smt`), named by its path.

    ``leaf`` false: an interior node, ``a`` and ``b`` its left and right children's hashes.
    ``leaf`` true: the subtree holds one key, ``a`` the key and ``b`` its value's hash.
    """

    __tablename__ = "index_nodes"
    __table_args__ = (
        CheckConstraint("length(a) = 32 AND length(b) = 32", name="ck_index_nodes_hashes"),
    )

    path: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    leaf: bool = Field(sa_column=Column(Boolean, nullable=False))
    a: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    b: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class IndexValueRow(SQLModel, table=True):
    """The current value of a product-index key (:mod:`tracecore.indexstate`)."""

    __tablename__ = "index_values"
    __table_args__ = (CheckConstraint("length(key) = 32", name="ck_index_values_key"),)

    key: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Checkpoint(SQLModel, table=True):
    """A signed checkpoint of the log (C2SP tlog-checkpoint as a signed note), one per size."""

    __tablename__ = "checkpoints"
    __table_args__ = (CheckConstraint("length(root) = 32", name="ck_checkpoints_root_length"),)

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    note: str = Field(sa_column=Column(Text, nullable=False))
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class Cosignature(SQLModel, table=True):
    """A witness's tlog-cosignature/v1 signature line on a checkpoint."""

    __tablename__ = "cosignatures"

    checkpoint_size: int = Field(
        sa_column=Column(BigInteger, ForeignKey("checkpoints.size"), primary_key=True)
    )
    witness: str = Field(sa_column=Column(Text, primary_key=True))
    line: str = Field(sa_column=Column(Text, nullable=False))
    received_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class Scan(SQLModel, table=True):
    """One scan of a product page, kept for copy detection with minimal personal data.

    ``client`` is a keyed hash of the client's address (HMAC-SHA256 with the instance's scan
    salt, truncated to 16 bytes): the same client always hashes alike, nobody can reverse it.
    ``place`` is a coarse place the client chose to give (a city), never a position.
    """

    __tablename__ = "scans"
    __table_args__ = (
        Index("ix_scans_product_key_at_ms", "product_key", "at_ms"),
        CheckConstraint("length(client) = 16", name="ck_scans_client_length"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), nullable=False)
    )
    client: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    place: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class ScanClient(SQLModel, table=True):
    """Per product and client: when it first and last scanned the code, and how often.

    Copy detection counts the clients seen within a window; this table keeps that count a
    range over a handful of rows per genuine product, whatever the number of scans.
    """

    __tablename__ = "scan_clients"
    __table_args__ = (
        Index("ix_scan_clients_product_key_last_ms", "product_key", "last_ms"),
        CheckConstraint("length(client) = 16", name="ck_scan_clients_client_length"),
        CheckConstraint("scans >= 1", name="ck_scan_clients_scans"),
    )

    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), primary_key=True)
    )
    client: bytes = Field(sa_column=Column(LargeBinary, primary_key=True))
    first_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    scans: int = Field(sa_column=Column(Integer, nullable=False))
    first_place: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))


class Feedback(SQLModel, table=True):
    """A buyer's rating of a product, with an optional complaint (shown to inspectors and owner)."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_product_key_at_ms", "product_key", "at_ms"),
        Index("ix_feedback_client_at_ms", "client", "at_ms"),
        # Credit scores read the complaints of a window (tracecore.storage.trace.credit_facts).
        Index(
            "ix_feedback_complaints_at_ms",
            "at_ms",
            sqlite_where=text("complaint IS NOT NULL"),
            postgresql_where=text("complaint IS NOT NULL"),
        ),
        CheckConstraint("rating >= 1 AND rating <= 5", name="ck_feedback_rating"),
        CheckConstraint("length(client) = 16", name="ck_feedback_client_length"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), nullable=False)
    )
    rating: int = Field(sa_column=Column(Integer, nullable=False))
    complaint: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    client: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class ContractQueue(SQLModel, table=True):
    """A product whose chain changed since its contracts were last evaluated.

    Ingest adds the products of each batch in the batch's transaction; the contract evaluator
    takes them (and their descendants) once a signed checkpoint covers their entries.
    """

    __tablename__ = "contract_queue"

    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), primary_key=True)
    )
    queued_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class ContractResult(SQLModel, table=True):
    """The latest result of one contract for one product (docs/contracts.md).

    ``result`` is the deterministic CBOR of the whole result (what ``agritrace verify``
    compares); the other columns repeat parts of it for queries.
    """

    __tablename__ = "contract_results"
    __table_args__ = (
        Index("ix_contract_results_contract_status", "contract", "status"),
        Index("ix_contract_results_status_evaluated_ms", "status", "evaluated_ms"),
        CheckConstraint(
            "status IN ('pass', 'fail', 'not_applicable')", name="ck_contract_results_status"
        ),
        CheckConstraint("length(source_sha256) = 64", name="ck_contract_results_source_length"),
    )

    product_key: str = Field(
        sa_column=Column(String(PRODUCT_KEY_LENGTH), ForeignKey("products.key"), primary_key=True)
    )
    contract: str = Field(sa_column=Column(String(64), primary_key=True))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    source_sha256: str = Field(sa_column=Column(String(64), nullable=False))
    log_size: int = Field(sa_column=Column(BigInteger, nullable=False))
    status: str = Field(sa_column=Column(String(16), nullable=False))
    result: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    evaluated_ms: int = Field(sa_column=Column(BigInteger, nullable=False))


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser of the console (docs/inspection.md, "The console").

    The browser holds a random secret in a cookie; the row keeps only its SHA-256
    (``secret_hash``), so the table read by an attacker opens no session. A session stands for
    the token that opened it (``token_id``) and ends with it: the token's expiry and revocation
    are checked on every request. Admin sessions have no stored token; they keep the SHA-256
    of the admin token they were opened with (``admin_hash``) and end when the setting changes.
    ``ended_ms`` is set at sign-out. Idle and absolute lifetimes are settings, applied to
    ``last_seen_ms`` and ``created_ms`` when the session is looked up.
    """

    __tablename__ = "console_sessions"
    __table_args__ = (
        UniqueConstraint("secret_hash", name="uq_console_sessions_secret_hash"),
        CheckConstraint("length(secret_hash) = 32", name="ck_console_sessions_secret_hash_length"),
        CheckConstraint(
            "(token_id IS NULL) <> (admin_hash IS NULL)", name="ck_console_sessions_one_credential"
        ),
        Index("ix_console_sessions_token_id", "token_id"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    secret_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("tokens.id"), nullable=True)
    )
    admin_hash: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_seen_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    ended_ms: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class SignIn(SQLModel, table=True):
    """One attempt to sign in to the console: its client (a keyed hash, as for scans) and outcome.

    Failed attempts per client within a window are limited (``AGRITRACE_SIGN_IN_FAILURES``);
    the rows are also the record of who tried, kept without the token text.
    """

    __tablename__ = "sign_ins"
    __table_args__ = (
        Index("ix_sign_ins_client_at_ms", "client", "at_ms"),
        CheckConstraint("length(client) = 16", name="ck_sign_ins_client_length"),
    )

    id: int | None = Field(
        default=None, sa_column=Column(Integer, primary_key=True, autoincrement=True)
    )
    client: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    ok: bool = Field(sa_column=Column(Boolean, nullable=False))
    token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("tokens.id"), nullable=True)
    )


class AccessRecord(SQLModel, table=True):
    """An ``access`` log entry, indexed for the access trail (docs/inspection.md).

    The log entry (``log_index``) is the record; this row and its :class:`AccessParty` rows are
    what the trail pages and ``GET /v1/access`` search, written in the same transaction.
    """

    __tablename__ = "access_records"
    __table_args__ = (Index("ix_access_records_who_log_index", "who", "log_index"),)

    log_index: int = Field(
        sa_column=Column(
            BigInteger, ForeignKey("log_entries.index"), primary_key=True, autoincrement=False
        )
    )
    time_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    who: str = Field(sa_column=Column(String(ID_LENGTH), nullable=False))
    role: str = Field(sa_column=Column(String(16), nullable=False))
    action: str = Field(sa_column=Column(String(200), nullable=False))
    target: str = Field(sa_column=Column(String(1000), nullable=False))


class AccessParty(SQLModel, table=True):
    """A party whose data an access showed (one row per party named by the entry)."""

    __tablename__ = "access_parties"
    __table_args__ = (Index("ix_access_parties_party_id_log_index", "party_id", "log_index"),)

    log_index: int = Field(
        sa_column=Column(
            BigInteger,
            ForeignKey("access_records.log_index"),
            primary_key=True,
            autoincrement=False,
        )
    )
    party_id: str = Field(sa_column=Column(String(ID_LENGTH), primary_key=True))


class ComplaintAnswer(SQLModel, table=True):
    """The owning party's answer to a buyer's complaint: one per complaint, never replaced.

    A second answer to the same complaint is refused (the primary key), so what a buyer, the
    party and inspectors read is the one the party wrote, when it wrote it.
    """

    __tablename__ = "complaint_answers"
    __table_args__ = (
        CheckConstraint(
            "length(text) >= 1 AND length(text) <= 2000", name="ck_complaint_answers_text"
        ),
    )

    feedback_id: int = Field(
        sa_column=Column(Integer, ForeignKey("feedback.id"), primary_key=True, autoincrement=False)
    )
    party_id: str = Field(
        sa_column=Column(String(ID_LENGTH), ForeignKey("parties.id"), nullable=False)
    )
    token_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("tokens.id"), nullable=True)
    )
    text: str = Field(sa_column=Column(Text, nullable=False))
    at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
