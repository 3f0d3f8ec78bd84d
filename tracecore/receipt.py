"""Receipts: the log's signed promise that a device message was accepted and logged.

After the database commit the ingest service publishes a receipt on
``agritrace/v1/devices/{device}/receipt``. It is the same tagged COSE_Sign1 construction as a
device message (:mod:`tracecore.cose`, RFC 9052 §4.2 and §4.4) but signed by the *log* key
(``kid = device_kid(log public key)``), and its payload is the deterministic CBOR map
(RFC 8949 §4.2.1)::

    {"v": 1, "device": tstr, "seq": uint, "index": uint, "entry": bstr .size 32,
     "msg": bstr .size 32, "time": uint}

``index`` is the leaf index of the message's entry in the log, ``entry`` that entry's leaf hash
(RFC 9162 §2.1.1: SHA-256(0x00 ‖ entry bytes)), ``msg`` the SHA-256 of the exact COSE bytes of
the device message and ``time`` the server's receive time in milliseconds since the Unix epoch.
A device that holds a receipt which verifies under the pinned log key and
:meth:`SignedReceipt.matches` its outbox message may delete that message from the outbox.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import nacl.signing

from tracecore.cbor import decode_strict, encode_deterministic, kind_name
from tracecore.cose import CoseSigner, SignedMessage, parse_cose
from tracecore.errors import IdentifierError, MalformedMessage
from tracecore.identifiers import parse_device_id
from tracecore.message import FORMAT_VERSION, MAX_SEQ, MAX_TIME_MS

__all__ = [
    "HASH_LENGTH",
    "MAX_INDEX",
    "Receipt",
    "SignedReceipt",
    "parse_receipt",
    "sign_receipt",
]

HASH_LENGTH: Final = 32  # SHA-256
MAX_INDEX: Final = 2**63 - 1
_FIELDS: Final = frozenset({"v", "device", "seq", "index", "entry", "msg", "time"})


def _check_uint(name: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise MalformedMessage(f"receipt {name} must be an integer in {low}..{high}, got {value!r}")
    return value


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_LENGTH:
        raise MalformedMessage(
            f"receipt {name} must be a byte string of {HASH_LENGTH} bytes, got "
            f"{kind_name(value)}" + (f" of {len(value)} bytes" if isinstance(value, bytes) else "")
        )
    return value


@dataclass(frozen=True, slots=True)
class Receipt:
    """The content of a receipt; the constructor checks every field rule.

    Raises :class:`~tracecore.errors.MalformedMessage` on a broken rule.
    """

    device: str
    seq: int
    index: int
    entry: bytes
    msg: bytes
    time: int

    def __post_init__(self) -> None:
        """Check the field rules (same ranges as device messages for device, seq and time)."""
        if not isinstance(self.device, str):
            raise MalformedMessage(f"receipt device must be text, got {self.device!r}")
        try:
            parse_device_id(self.device)
        except IdentifierError as exc:
            raise MalformedMessage(f"receipt device: {exc}") from exc
        _check_uint("seq", self.seq, 1, MAX_SEQ)
        _check_uint("index", self.index, 0, MAX_INDEX)
        _check_hash("entry", self.entry)
        _check_hash("msg", self.msg)
        _check_uint("time", self.time, 0, MAX_TIME_MS)

    def to_cbor_map(self) -> dict[str, object]:
        """Return the receipt payload map, ready for deterministic encoding."""
        return {
            "v": FORMAT_VERSION,
            "device": self.device,
            "seq": self.seq,
            "index": self.index,
            "entry": self.entry,
            "msg": self.msg,
            "time": self.time,
        }

    @classmethod
    def from_cbor_map(cls, value: object) -> Receipt:
        """Build a receipt from its decoded payload map; raise :class:`MalformedMessage`."""
        if not isinstance(value, dict):
            raise MalformedMessage(f"receipt payload must be a map, got {kind_name(value)}")
        for key in value:
            if not isinstance(key, str):
                raise MalformedMessage(f"receipt payload keys must be text, got {key!r}")
        unknown = sorted(set(value) - _FIELDS)
        if unknown:
            raise MalformedMessage(f"receipt has unknown field {unknown[0]!r}")
        missing = sorted(_FIELDS - set(value))
        if missing:
            raise MalformedMessage(f"receipt lacks required field {missing[0]!r}")
        version = value["v"]
        if type(version) is not int or version != FORMAT_VERSION:
            raise MalformedMessage(f"receipt v must be {FORMAT_VERSION}, got {version!r}")
        return cls(
            device=value["device"],
            seq=value["seq"],
            index=value["index"],
            entry=value["entry"],
            msg=value["msg"],
            time=value["time"],
        )


@dataclass(frozen=True, slots=True)
class SignedReceipt:
    """A parsed receipt: exact bytes, COSE parts and content. Verify before trusting it."""

    raw: bytes
    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes
    receipt: Receipt

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the exact receipt bytes."""
        return hashlib.sha256(self.raw).digest()

    def verify(self, log_public_key: bytes) -> None:
        """Check kid and Ed25519 signature against the log's public key (RFC 9052 §4.4).

        Raises :class:`~tracecore.errors.UnknownKey` if the kid is not that of
        ``log_public_key`` and :class:`~tracecore.errors.BadSignature` if the signature fails.
        """
        parse_cose(self.raw).verify(log_public_key)

    def matches(self, signed_message: SignedMessage) -> bool:
        """Return whether this receipt is about ``signed_message``: same device, seq and hash.

        Compares the receipt's ``device`` and ``seq`` with the message's and ``msg`` with the
        SHA-256 of the message's exact bytes. Does not check the signature (:meth:`verify`).
        """
        message = signed_message.message
        return (
            self.receipt.device == message.device
            and self.receipt.seq == message.seq
            and self.receipt.msg == signed_message.sha256
        )


def sign_receipt(receipt: Receipt, log_signer: nacl.signing.SigningKey | CoseSigner) -> bytes:
    """Return the tagged COSE_Sign1 bytes of ``receipt`` signed by the log key.

    Same construction as device messages (:func:`tracecore.cose.sign_cose`); the payload is the
    receipt map in deterministic CBOR (RFC 8949 §4.2.1). Deterministic output. Pass a
    :class:`~tracecore.cose.CoseSigner` of the log key to sign many receipts: it computes the
    key's protected header once instead of per receipt.
    """
    signer = log_signer if isinstance(log_signer, CoseSigner) else CoseSigner(log_signer)
    return signer.sign(encode_deterministic(receipt.to_cbor_map()))


def parse_receipt(raw: bytes) -> SignedReceipt:
    """Parse a receipt (envelope and payload rules), without checking its signature.

    Raises :class:`~tracecore.errors.MalformedMessage` naming the first broken rule.
    """
    cose = parse_cose(raw)
    receipt = Receipt.from_cbor_map(decode_strict(cose.payload, what="receipt payload"))
    return SignedReceipt(
        raw=cose.raw,
        protected=cose.protected,
        kid=cose.kid,
        payload=cose.payload,
        signature=cose.signature,
        receipt=receipt,
    )
