"""The one error tree of agritrace.

Every error that agritrace code raises on purpose is an :class:`AgritraceError`. Errors of
third-party libraries (cbor2, PyNaCl, SQLAlchemy, …) are wrapped where they cross into our code,
with ``raise ... from exc``, so a caller never has to know which library sits underneath::

    AgritraceError
    ├── IdentifierError            a product key, GTIN, lot, serial, device or party id is invalid
    ├── MessageRejected            a device message is refused; ``.reason`` is a RejectReason
    │   ├── MalformedMessage           reason "malformed": CBOR, COSE or field rules, size
    │   ├── TopicMismatch              reason "topic_mismatch": payload device ≠ topic device
    │   ├── UnknownKey                 reason "unknown_key": no key with this kid for the device
    │   ├── RevokedKey                 reason "revoked_key": key not valid at the message time
    │   ├── BadSignature               reason "bad_signature"
    │   └── BadRotation                reason "bad_rotation": a key rotation is refused
    ├── KeyFileError               a key file or vkey cannot be read or has the wrong form
    ├── NoteError                  a signed note, checkpoint or cosignature is refused
    │   ├── MalformedNote              breaks a C2SP note, checkpoint or tlog-witness format
    │   └── UnverifiedNote             no trusted signature verifies, or a known one is bad
    ├── BundleError                an evidence bundle or trust policy is malformed or fails a check
    ├── ConfigError                a setting is missing or invalid
    ├── InputError                 a line or row of a gateway's CSV input breaks a rule: ``.line``,
    │                              ``.column``, ``.reason`` (docs/gateway-csv.md)
    ├── BatchError                 a batch file has bad rows: ``.problems`` lists every InputError
    ├── ProofError                 a Merkle proof is malformed, asks for impossible sizes, or fails
    ├── OutboxFull                 a gateway's outbox is at its bound: a new message is refused
    ├── WorkerDied                 a worker process of a service ended with work outstanding
    ├── StorageError               the database refused or lost something
    │   ├── NotFound                   no such record
    │   ├── Conflict                   the record exists already (or a unique rule would break)
    │   └── DatabaseUnavailable        the database cannot be reached or is busy: retry later
    └── MqttError                  ingest's MQTT client (ingest/mqtt, docs/ingest.md)
        ├── MqttConnectError           the broker refused the CONNECT: ``.code``, ``.reason``
        │   └── MqttUnsupportedProtocol    … because of the protocol version: retry with 3.1.1
        ├── MqttRefused                the broker refused a SUBSCRIBE or a PUBLISH: ``.codes``
        ├── MqttProtocolError          the broker sent bytes that break the MQTT spec
        └── MqttConnectionLost         the connection is gone (closed, reset, keepalive, error);
                                       ``.unacknowledged``: the items publish_many did not get
                                       acknowledged

The other reason codes of the ingest rules (unknown_device, clock_skew, equivocation,
unauthorized_product, serial_conflict, unknown_product) depend on server state, not on the
message alone; the ingest service raises :class:`MessageRejected` with those codes directly.
``too_large`` (a payload over the service's size limit) is decided by ingest before the bytes are
read at all.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "AgritraceError",
    "BadRotation",
    "BadSignature",
    "BatchError",
    "BundleError",
    "ConfigError",
    "Conflict",
    "DatabaseUnavailable",
    "IdentifierError",
    "InputError",
    "KeyFileError",
    "MalformedMessage",
    "MalformedNote",
    "MessageRejected",
    "MqttConnectError",
    "MqttConnectionLost",
    "MqttError",
    "MqttProtocolError",
    "MqttRefused",
    "MqttUnsupportedProtocol",
    "NotFound",
    "NoteError",
    "OutboxFull",
    "ProofError",
    "RejectReason",
    "RevokedKey",
    "StorageError",
    "TopicMismatch",
    "UnknownKey",
    "UnverifiedNote",
]


class RejectReason(StrEnum):
    """Why a device message was refused (design.md, "Ingest rules"), in the order checked."""

    TOO_LARGE = "too_large"
    MALFORMED = "malformed"
    UNKNOWN_DEVICE = "unknown_device"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    BAD_SIGNATURE = "bad_signature"
    CLOCK_SKEW = "clock_skew"
    EQUIVOCATION = "equivocation"
    UNAUTHORIZED_PRODUCT = "unauthorized_product"
    # GS1 General Specifications §3.5.2: GTIN + serial names one item, whatever the lot.
    SERIAL_CONFLICT = "serial_conflict"
    UNKNOWN_PRODUCT = "unknown_product"
    # docs/protocol.md §5, "Key rotations": the proof of possession fails, the signing key is
    # not the device's current one, the new key is registered already, or the key is revoked.
    BAD_ROTATION = "bad_rotation"


class AgritraceError(Exception):
    """Root of every error agritrace raises on purpose."""


class IdentifierError(AgritraceError, ValueError):
    """An identifier (product key, GTIN, lot, serial, device or party id) breaks a rule.

    The message names the rule, e.g. ``GTIN check digit is 7, expected 2``.
    """


class MessageRejected(AgritraceError):
    """A device message is refused. ``reason`` is the code stored in the rejections table."""

    reason: RejectReason

    def __init__(self, reason: RejectReason | str, detail: str) -> None:
        self.reason = RejectReason(reason)
        self.detail = detail
        super().__init__(f"{self.reason.value}: {detail}")


class _FixedReason(MessageRejected):
    """A rejection whose reason is fixed by its class."""

    fixed_reason: RejectReason

    def __init__(self, detail: str) -> None:
        super().__init__(self.fixed_reason, detail)


class MalformedMessage(_FixedReason):
    """The bytes are not a well-formed agritrace message (CBOR, COSE, field rules or size)."""

    fixed_reason = RejectReason.MALFORMED


class TopicMismatch(_FixedReason):
    """The payload names another device than the MQTT topic it arrived on."""

    fixed_reason = RejectReason.TOPIC_MISMATCH


class UnknownKey(_FixedReason):
    """The message's key id matches no key of the device."""

    fixed_reason = RejectReason.UNKNOWN_KEY


class RevokedKey(_FixedReason):
    """The key exists but was not valid at the message's time (revoked or rotated out)."""

    fixed_reason = RejectReason.REVOKED_KEY


class BadSignature(_FixedReason):
    """The Ed25519 signature does not verify under the device key."""

    fixed_reason = RejectReason.BAD_SIGNATURE


class BadRotation(_FixedReason):
    """A device's key rotation is refused (docs/protocol.md §5, "Key rotations")."""

    fixed_reason = RejectReason.BAD_ROTATION


class KeyFileError(AgritraceError):
    """A key file, private key or verifier key (vkey) cannot be read or has the wrong form."""


class NoteError(AgritraceError):
    """A signed note (C2SP signed-note), checkpoint or cosignature is refused."""


class MalformedNote(NoteError, ValueError):
    """The text breaks a C2SP format: signed-note, tlog-checkpoint, tlog-cosignature or the
    tlog-witness request and response bodies."""


class UnverifiedNote(NoteError):
    """No signature of a trusted key verifies, or a signature of a known key is bad."""


class BundleError(AgritraceError):
    """An evidence bundle or trust policy is out of form, or one of its checks fails."""


class ConfigError(AgritraceError):
    """A setting is missing or invalid."""


class InputError(AgritraceError, ValueError):
    """A line or row of a gateway's CSV input (docs/gateway-csv.md) breaks a rule.

    ``line`` is the 1-based line number when the caller knows it, ``column`` the column's name
    (``"time"``, ``"unit"``, ``"products"``, …) when one column is at fault, ``reason`` what is
    wrong and what is expected. The message reads like
    ``line 17, column "unit": "degC" is not a unit we know; use …``.
    """

    def __init__(self, reason: str, *, line: int | None = None, column: str | None = None) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        where = [f"line {line}"] if line is not None else []
        if column is not None:
            where.append(f'column "{column}"')
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class BatchError(AgritraceError, ValueError):
    """A batch file (docs/gateway-csv.md) has bad rows; none of its events may be sent.

    ``problems`` holds every :class:`InputError` found, in line order; the message lists them
    (the first 50, then how many more).
    """

    shown: int = 50

    def __init__(self, problems: tuple[InputError, ...]) -> None:
        self.problems = problems
        count = len(problems)
        lines = [str(problem) for problem in problems[: self.shown]]
        if count > self.shown:
            lines.append(f"... and {count - self.shown} more")
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{count} {noun}, nothing was accepted:\n" + "\n".join(lines))


class ProofError(AgritraceError):
    """A Merkle proof (RFC 9162 §2.1.3, §2.1.4) cannot be made or does not verify.

    Raised for impossible parameters (an index outside the tree, an old size above the new one),
    for malformed proofs (a hash that is not 32 bytes, too few or too many hashes) and for proofs
    that do not lead to the expected root; the message says which.
    """


class OutboxFull(AgritraceError):
    """A gateway's outbox holds as much as its bound allows: a new message is refused.

    Raised before a sequence number is given out, so no number is used and nothing already
    stored is touched (docs/gateway.md, "When the broker is down"). ``limit`` says which bound
    was reached: ``"messages"`` or ``"bytes"``.
    """

    def __init__(self, detail: str, *, limit: str) -> None:
        self.limit = limit
        super().__init__(detail)


class WorkerDied(AgritraceError):
    """A worker process (ingest's signature workers) ended with tasks outstanding.

    The tasks fail with this error; the batch that needed them rolls back and is retried.
    """


class StorageError(AgritraceError):
    """The database refused an operation or returned something unexpected."""


class NotFound(StorageError):
    """No record with the given identity exists."""


class Conflict(StorageError):
    """A record with the given identity exists already, or a uniqueness rule would break."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached, refused the connection, or is locked or out of space.

    A condition of the moment, not of the request: the same operation may succeed later, so
    services wait and retry (docs/operations.md, "Outages") and the API answers 503.
    """


class MqttError(AgritraceError):
    """An error of ingest's MQTT client (ingest/mqtt): the broker or the connection failed."""


class MqttConnectError(MqttError):
    """The broker refused the CONNECT with a CONNACK return or reason code.

    ``code`` is the CONNACK code (MQTT 3.1.1 §3.2.2.3 return code, MQTT 5.0 §3.2.2.2 reason
    code); ``reason`` is the broker's reason string or the spec's name for the code.
    """

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"broker refused the connection: {reason} (code 0x{code:02x})")


class MqttUnsupportedProtocol(MqttConnectError):
    """The broker does not speak the requested MQTT version: connect again with 3.1.1."""


class MqttRefused(MqttError):
    """The broker refused a SUBSCRIBE, UNSUBSCRIBE or PUBLISH; ``codes`` holds its reason codes."""

    def __init__(self, what: str, codes: tuple[int, ...]) -> None:
        self.codes = codes
        listed = ", ".join(f"0x{code:02x}" for code in codes)
        super().__init__(f"broker refused {what}: reason code(s) {listed}")


class MqttProtocolError(MqttError):
    """The bytes from the broker break the MQTT spec; the message says which rule."""


class MqttConnectionLost(MqttError):
    """The MQTT connection is gone; the message says why.

    ``unacknowledged`` lists the ``(topic, payload)`` items of a ``publish_many`` call that the
    broker did not acknowledge (empty for every other operation): publish them again.
    """

    def __init__(self, detail: str, unacknowledged: tuple[tuple[str, bytes], ...] = ()) -> None:
        self.detail = detail
        self.unacknowledged = unacknowledged
        super().__init__(f"MQTT connection lost: {detail}")
