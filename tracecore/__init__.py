"""tracecore: the core shared by every agritrace part: identifiers, messages, keys, storage."""

from tracecore.errors import (
    AgritraceError,
    BadSignature,
    ConfigError,
    Conflict,
    IdentifierError,
    KeyFileError,
    MalformedMessage,
    MessageRejected,
    NotFound,
    RejectReason,
    RevokedKey,
    StorageError,
    TopicMismatch,
    UnknownKey,
)

__all__ = [
    "AgritraceError",
    "BadSignature",
    "ConfigError",
    "Conflict",
    "IdentifierError",
    "KeyFileError",
    "MalformedMessage",
    "MessageRejected",
    "NotFound",
    "RejectReason",
    "RevokedKey",
    "StorageError",
    "TopicMismatch",
    "UnknownKey",
]
