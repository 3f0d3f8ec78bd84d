"""Storage of agritrace: the tables, engines and sessions, migrations and the registry.

SQLModel on SQLite (the default, WAL mode) or PostgreSQL; Alembic migrations shipped inside this
package; repository functions that take a session and an explicit time. docs/storage.md
describes every table.
"""

from tracecore.storage.engine import make_engine, session_scope, storage_errors
from tracecore.storage.migrate import current_revision, head_revision, upgrade
from tracecore.storage.models import (
    PARTY_KINDS,
    TOKEN_ROLES,
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
)
from tracecore.storage.registry import (
    IssuedToken,
    TokenGrant,
    create_party,
    current_key,
    device_keys,
    find_token,
    get_device,
    get_party,
    hash_token,
    issue_token,
    key_for,
    register_device,
    revoke_key,
    revoke_token,
    rotate_key,
    validate_public_key,
)

__all__ = [
    "PARTY_KINDS",
    "TOKEN_ROLES",
    "ChainLink",
    "Device",
    "DeviceKey",
    "IssuedToken",
    "LogEntry",
    "Party",
    "Product",
    "ProductParent",
    "Receipt",
    "Rejection",
    "Token",
    "TokenGrant",
    "create_party",
    "current_key",
    "current_revision",
    "device_keys",
    "find_token",
    "get_device",
    "get_party",
    "hash_token",
    "head_revision",
    "issue_token",
    "key_for",
    "make_engine",
    "register_device",
    "revoke_key",
    "revoke_token",
    "rotate_key",
    "session_scope",
    "storage_errors",
    "upgrade",
    "validate_public_key",
]
