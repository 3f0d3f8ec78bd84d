"""Initial schema: registry, log and Merkle nodes, chains, custody, parking, rejections, receipts,
checkpoints and cosignatures.

Revision ID: 0001
Revises: (none)

Creates exactly the tables of tracecore/storage/models.py (see docs/storage.md); a test compares
the migrated schema with the models on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

__all__ = ["branch_labels", "depends_on", "down_revision", "downgrade", "revision", "upgrade"]

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "checkpoints",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("length(root) = 32", name="ck_checkpoints_root_length"),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(hash) = 32", name="ck_merkle_nodes_hash_length"),
        sa.CheckConstraint("level >= 1", name="ck_merkle_nodes_level"),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    op.create_table(
        "parties",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('farm', 'packer', 'processor', 'carrier', 'retailer', 'lab', 'inspector')",
            name="ck_parties_kind",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "rejections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("device_id", sa.Text(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "reason IN ('malformed', 'unknown_device', 'topic_mismatch', 'unknown_key', 'revoked_key', 'bad_signature', 'clock_skew', 'equivocation', 'unauthorized_product', 'unknown_product')",
            name="ck_rejections_reason",
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rejections", schema=None) as batch_op:
        batch_op.create_index("ix_rejections_device_id", ["device_id"], unique=False)
        batch_op.create_index(
            "ix_rejections_reason_received_ms", ["reason", "received_ms"], unique=False
        )

    op.create_table(
        "cosignatures",
        sa.Column("checkpoint_size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.Text(), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["checkpoint_size"],
            ["checkpoints.size"],
        ),
        sa.PrimaryKeyConstraint("checkpoint_size", "witness"),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("party_id", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["party_id"],
            ["parties.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index("ix_devices_party_id", ["party_id"], unique=False)

    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("party_id", sa.String(length=64), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.CheckConstraint("role IN ('party', 'inspector')", name="ck_tokens_role"),
        sa.CheckConstraint("length(token_hash) = 32", name="ck_tokens_token_hash_length"),
        sa.ForeignKeyConstraint(
            ["party_id"],
            ["parties.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.create_index("ix_tokens_party_id", ["party_id"], unique=False)

    op.create_table(
        "device_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kid", sa.LargeBinary(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("valid_from_ms", sa.BigInteger(), nullable=False),
        sa.Column("valid_until_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("length(kid) = 8", name="ck_device_keys_kid_length"),
        sa.CheckConstraint("length(public_key) = 32", name="ck_device_keys_public_key_length"),
        sa.CheckConstraint(
            "valid_until_ms IS NULL OR valid_until_ms >= valid_from_ms",
            name="ck_device_keys_window",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "kid", name="uq_device_keys_device_id_kid"),
        sa.UniqueConstraint("public_key", name="uq_device_keys_public_key"),
    )
    op.create_table(
        "log_entries",
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("raw_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("entry", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('device_message', 'device_registered', 'key_rotated', 'key_revoked', 'recall', 'statement')",
            name="ck_log_entries_kind",
        ),
        sa.CheckConstraint('"index" >= 0', name="ck_log_entries_index"),
        sa.CheckConstraint("length(leaf_hash) = 32", name="ck_log_entries_leaf_hash_length"),
        sa.CheckConstraint("length(raw_sha256) = 32", name="ck_log_entries_raw_sha256_length"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("index"),
        sa.UniqueConstraint("device_id", "seq", name="uq_log_entries_device_id_seq"),
    )
    op.create_table(
        "parked_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("raw_sha256", sa.LargeBinary(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("length(raw_sha256) = 32", name="ck_parked_messages_raw_sha256_length"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_id", "seq", name="uq_parked_messages_device_id_seq"),
    )
    with op.batch_alter_table("parked_messages", schema=None) as batch_op:
        batch_op.create_index("ix_parked_messages_expires_ms", ["expires_ms"], unique=False)

    op.create_table(
        "parked_products",
        sa.Column("parked_id", sa.Integer(), nullable=False),
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["parked_id"], ["parked_messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("parked_id", "product_key"),
    )
    with op.batch_alter_table("parked_products", schema=None) as batch_op:
        batch_op.create_index("ix_parked_products_product_key", ["product_key"], unique=False)

    op.create_table(
        "products",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.Text(), nullable=True),
        sa.Column("owner_party_id", sa.String(length=64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("commissioned_index", sa.BigInteger(), nullable=True),
        sa.Column("holder_party_id", sa.String(length=64), nullable=True),
        sa.Column("pending_party_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["commissioned_index"],
            ["log_entries.index"],
        ),
        sa.ForeignKeyConstraint(
            ["holder_party_id"],
            ["parties.id"],
        ),
        sa.ForeignKeyConstraint(
            ["owner_party_id"],
            ["parties.id"],
        ),
        sa.ForeignKeyConstraint(
            ["pending_party_id"],
            ["parties.id"],
        ),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index("ix_products_owner_party_id", ["owner_party_id"], unique=False)

    op.create_table(
        "receipts",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["log_index"],
            ["log_entries.index"],
        ),
        sa.PrimaryKeyConstraint("device_id", "seq"),
    )
    op.create_table(
        "chain_links",
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("pseq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(prev_hash) = 32", name="ck_chain_links_prev_hash_length"),
        sa.CheckConstraint("pseq >= 1", name="ck_chain_links_pseq"),
        sa.ForeignKeyConstraint(
            ["log_index"],
            ["log_entries.index"],
        ),
        sa.ForeignKeyConstraint(
            ["product_key"],
            ["products.key"],
        ),
        sa.PrimaryKeyConstraint("product_key", "pseq"),
        sa.UniqueConstraint(
            "product_key", "log_index", name="uq_chain_links_product_key_log_index"
        ),
    )
    with op.batch_alter_table("chain_links", schema=None) as batch_op:
        batch_op.create_index("ix_chain_links_log_index", ["log_index"], unique=False)

    op.create_table(
        "product_parents",
        sa.Column("product_key", sa.String(length=255), nullable=False),
        sa.Column("parent_key", sa.String(length=255), nullable=False),
        sa.CheckConstraint("product_key <> parent_key", name="ck_product_parents_not_self"),
        sa.ForeignKeyConstraint(
            ["parent_key"],
            ["products.key"],
        ),
        sa.ForeignKeyConstraint(
            ["product_key"],
            ["products.key"],
        ),
        sa.PrimaryKeyConstraint("product_key", "parent_key"),
    )
    with op.batch_alter_table("product_parents", schema=None) as batch_op:
        batch_op.create_index("ix_product_parents_parent_key", ["parent_key"], unique=False)


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("product_parents", schema=None) as batch_op:
        batch_op.drop_index("ix_product_parents_parent_key")

    op.drop_table("product_parents")
    with op.batch_alter_table("chain_links", schema=None) as batch_op:
        batch_op.drop_index("ix_chain_links_log_index")

    op.drop_table("chain_links")
    op.drop_table("receipts")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_owner_party_id")

    op.drop_table("products")
    with op.batch_alter_table("parked_products", schema=None) as batch_op:
        batch_op.drop_index("ix_parked_products_product_key")

    op.drop_table("parked_products")
    with op.batch_alter_table("parked_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_parked_messages_expires_ms")

    op.drop_table("parked_messages")
    op.drop_table("log_entries")
    op.drop_table("device_keys")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_tokens_party_id")

    op.drop_table("tokens")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_party_id")

    op.drop_table("devices")
    op.drop_table("cosignatures")
    with op.batch_alter_table("rejections", schema=None) as batch_op:
        batch_op.drop_index("ix_rejections_reason_received_ms")
        batch_op.drop_index("ix_rejections_device_id")

    op.drop_table("rejections")
    op.drop_table("parties")
    op.drop_table("merkle_nodes")
    op.drop_table("checkpoints")
