"""Tagged COSE_Sign1 with Ed25519: the envelope of device messages and receipts.

Wire form (RFC 9052 §4.2, CBOR tag 18 from RFC 9052 §2), in deterministic CBOR
(RFC 8949 §4.2.1)::

    18([
        protected:   bstr .cbor {1: -8, 4: kid},   / alg: EdDSA (RFC 9053 §2.2), kid: 8 bytes /
        unprotected: {},
        payload:     bstr,                          / deterministic CBOR map /
        signature:   bstr .size 64                  / Ed25519 (RFC 8032) /
    ])

The signature is Ed25519 over the ``Sig_structure`` of RFC 9052 §4.4::

    ["Signature1", protected, h'', payload]

with the protected header as the exact bytes carried in the message and an empty external AAD.
``kid`` is :func:`tracecore.keys.device_kid` of the signer's public key (first 8 bytes of its
SHA-256). Nothing else is accepted: other algorithms, extra header parameters, a non-empty
unprotected map, a detached (nil) payload or a non-deterministic encoding are all malformed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

import cbor2
import nacl.exceptions
import nacl.signing

from tracecore.cbor import (
    UNDECIDED,
    decode_fast,
    decode_strict,
    encode_bytes,
    encode_deterministic,
    kind_name,
)
from tracecore.errors import BadSignature, MalformedMessage, UnknownKey
from tracecore.keys import KID_LENGTH, device_kid
from tracecore.message import AnyMessage, decode_payload, encode_payload, try_from_cbor_map

__all__ = [
    "ALG_EDDSA",
    "COSE_SIGN1_TAG",
    "HEADER_ALG",
    "HEADER_KID",
    "MAX_MESSAGE_BYTES",
    "SIGNATURE_LENGTH",
    "CoseSign1",
    "CoseSigner",
    "SignedMessage",
    "parse_cose",
    "parse_message",
    "protected_header",
    "sig_structure",
    "sign_cose",
    "sign_message",
    "verify_signature",
]

MAX_MESSAGE_BYTES: Final = 16384
"""Largest accepted COSE message, in bytes (design.md, "Ingest rules": size > 16 KiB)."""

COSE_SIGN1_TAG: Final = 18  # RFC 9052 §2, Table 1
HEADER_ALG: Final = 1  # RFC 9052 §3.1, Table 2
HEADER_KID: Final = 4  # RFC 9052 §3.1, Table 2
ALG_EDDSA: Final = -8  # RFC 9053 §2.2
SIGNATURE_LENGTH: Final = 64  # RFC 8032 §5.1.6
_CONTEXT: Final = "Signature1"  # RFC 9052 §4.4
_SIGNATURE_HEAD: Final = b"\x58\x40"  # a byte string of 64 bytes (RFC 8949 §3.1)
# An array of 4 (RFC 8949 §3.1), then the context as a text string.
_TO_BE_SIGNED_PREFIX: Final = b"\x84" + encode_deterministic(_CONTEXT)
_ALG_NAMES: Final = {-7: "ES256", -35: "ES384", -36: "ES512", -37: "PS256", -257: "RS256"}


def protected_header(kid: bytes) -> bytes:
    """Return the protected header bytes ``<< {1: -8, 4: kid} >>`` (RFC 9052 §3, §4.2)."""
    if len(kid) != KID_LENGTH:
        raise ValueError(f"kid must be {KID_LENGTH} bytes, got {len(kid)}")
    return encode_deterministic({HEADER_ALG: ALG_EDDSA, HEADER_KID: bytes(kid)})


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """Return the ToBeSigned bytes ``["Signature1", protected, h'', payload]``.

    RFC 9052 §4.4: context "Signature1", the protected header as carried (a byte string), the
    external AAD (empty here) and the payload, as a deterministically encoded CBOR array.
    """
    # Assembled by hand in its deterministic form (shortest heads; tests/tracecore/test_cose.py
    # checks it against the generic encoder): it is built for every signature checked.
    return _TO_BE_SIGNED_PREFIX + encode_bytes(protected) + b"\x40" + encode_bytes(payload)


@dataclass(frozen=True, slots=True)
class CoseSign1:
    """A parsed, structurally valid (not yet verified) COSE_Sign1 as agritrace uses it."""

    raw: bytes
    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the exact message bytes (the message hash in receipts and log entries)."""
        return hashlib.sha256(self.raw).digest()

    def to_be_signed(self) -> bytes:
        """Return the Sig_structure bytes the signature covers (RFC 9052 §4.4)."""
        return sig_structure(self.protected, self.payload)

    def verify(self, public_key: bytes) -> None:
        """Check the signature under an Ed25519 public key (32 bytes).

        Raises :class:`~tracecore.errors.UnknownKey` if ``kid`` is not
        ``device_kid(public_key)`` (the message names another key) and
        :class:`~tracecore.errors.BadSignature` if the Ed25519 signature (RFC 8032 §5.1.7) over
        the Sig_structure does not verify. A ``public_key`` that is not 32 bytes is a key
        problem, not a message problem: :class:`~tracecore.errors.KeyFileError`.
        """
        verify_signature(self.kid, self.protected, self.payload, self.signature, public_key)


def verify_signature(
    kid: bytes, protected: bytes, payload: bytes, signature: bytes, key: bytes
) -> None:
    """Check a COSE_Sign1's kid and Ed25519 signature from its parts, as :meth:`CoseSign1.verify`.

    For callers that ship the parts elsewhere to be checked (ingest's signature processes).
    """
    expected = device_kid(key)
    if kid != expected:
        raise UnknownKey(f"kid {kid.hex()} is not the kid {expected.hex()} of the given key")
    try:
        nacl.signing.VerifyKey(key).verify(sig_structure(protected, payload), signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise BadSignature("Ed25519 signature does not verify under the key") from exc
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise BadSignature(f"Ed25519 signature cannot be checked: {exc}") from exc


def sign_cose(payload: bytes, signing_key: nacl.signing.SigningKey) -> bytes:
    """Return a tagged COSE_Sign1 over ``payload`` signed with an Ed25519 key.

    The protected header is ``{1: -8, 4: device_kid(public key)}``; the signature is Ed25519
    over the Sig_structure (RFC 9052 §4.4); the result is deterministic CBOR (RFC 8949 §4.2.1)
    and, Ed25519 being deterministic (RFC 8032 §5.1.6), the same inputs give the same bytes.
    ``payload`` is carried as is; callers pass deterministic CBOR.
    """
    return CoseSigner(signing_key).sign(payload)


class CoseSigner:
    """Signs COSE_Sign1 messages with one Ed25519 key; the same bytes as :func:`sign_cose`.

    The kid, the protected header and the constant parts of the Sig_structure and of the
    envelope are computed once, so each :meth:`sign` costs the signature and a few byte joins:
    this is how ingest signs a receipt per message. The envelope is assembled by hand in its
    deterministic form (RFC 8949 §4.2.1: shortest heads; the only map is empty), which
    tests/tracecore/test_cose.py checks against the generic encoder.
    """

    __slots__ = ("_envelope", "_key", "_to_be_signed", "kid", "protected")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        """Take the key; compute its kid and protected header."""
        self._key = signing_key
        self.kid = device_kid(bytes(signing_key.verify_key))
        self.protected = protected_header(self.kid)
        # RFC 9052 §4.4: ["Signature1", protected, h'' (no external AAD), payload]
        self._to_be_signed = _TO_BE_SIGNED_PREFIX + encode_bytes(self.protected) + b"\x40"
        # RFC 9052 §4.2: 18([protected, {}, payload, signature])
        self._envelope = b"\xd2\x84" + encode_bytes(self.protected) + b"\xa0"

    def sign(self, payload: bytes) -> bytes:
        """Return the tagged COSE_Sign1 bytes over ``payload`` (carried as is)."""
        carried = encode_bytes(payload)
        signature = self._key.sign(self._to_be_signed + carried).signature
        return self._envelope + carried + _SIGNATURE_HEAD + signature


def _alg_name(alg: object) -> str:
    if isinstance(alg, int) and not isinstance(alg, bool) and alg in _ALG_NAMES:
        return f"{alg} ({_ALG_NAMES[alg]})"
    return repr(alg)


def _parse_protected(protected: bytes) -> bytes:
    """Check the protected header is exactly ``{1: -8, 4: bstr(8)}``; return the kid."""
    header = decode_strict(protected, what="protected header")
    if not isinstance(header, dict):
        raise MalformedMessage(f"protected header must be a map, got {kind_name(header)}")
    for label in header:
        # type(), not isinstance(): True and 1.0 compare (and hash) equal to 1 in Python.
        if type(label) is not int:
            raise MalformedMessage(
                f"protected header labels must be integers, got {kind_name(label)} {label!r}"
            )
    if HEADER_ALG not in header:
        raise MalformedMessage("protected header lacks alg (label 1)")
    alg = header[HEADER_ALG]
    if type(alg) is not int or alg != ALG_EDDSA:
        raise MalformedMessage(f"unsupported alg {_alg_name(alg)}: only -8 (EdDSA) is accepted")
    if HEADER_KID not in header:
        raise MalformedMessage("protected header lacks kid (label 4)")
    extra = sorted(label for label in header if label not in (HEADER_ALG, HEADER_KID))
    if extra:
        raise MalformedMessage(
            f"protected header must hold only alg (1) and kid (4), also has {extra[0]}"
        )
    kid = header[HEADER_KID]
    if not isinstance(kid, bytes) or len(kid) != KID_LENGTH:
        raise MalformedMessage(
            f"kid must be a byte string of {KID_LENGTH} bytes, got {kind_name(kid)}"
            + (f" of {len(kid)} bytes" if isinstance(kid, bytes) else "")
        )
    return kid


def parse_cose(raw: bytes, *, max_bytes: int = MAX_MESSAGE_BYTES) -> CoseSign1:
    """Parse a tagged COSE_Sign1 in agritrace's profile, without checking the signature.

    Checks, in order: size (≤ ``max_bytes``, before any decoding), strict deterministic CBOR
    (:func:`tracecore.cbor.decode_strict`), tag 18 (RFC 9052 §4.2), an array of 4 items, the
    protected header a byte string holding exactly ``{1: -8, 4: bstr(8)}``, the unprotected
    header an empty map, the payload a byte string (no detached payload) and the signature a
    byte string of 64 bytes. The payload's content is not looked at.

    Raises :class:`~tracecore.errors.MalformedMessage` naming the first broken rule.
    """
    if not isinstance(raw, bytes):
        raise MalformedMessage(f"message must be bytes, got {type(raw).__name__}")
    if len(raw) > max_bytes:
        raise MalformedMessage(f"message is {len(raw)} bytes, more than the {max_bytes}-byte limit")
    item = decode_strict(
        raw, allowed_tags=(COSE_SIGN1_TAG,), max_bytes=max_bytes, what="COSE message"
    )
    if not isinstance(item, cbor2.CBORTag):
        raise MalformedMessage(
            f"not a tagged COSE_Sign1: expected CBOR tag 18, got an untagged {kind_name(item)}"
        )
    body = item.value
    if not isinstance(body, list | tuple) or len(body) != 4:
        size = f" of {len(body)} items" if isinstance(body, list | tuple) else ""
        raise MalformedMessage(
            f"COSE_Sign1 must be an array of 4 items, got {kind_name(body)}{size}"
        )
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes):
        raise MalformedMessage(
            f"protected header must be a byte string, got {kind_name(protected)}"
        )
    kid = _parse_protected(protected)
    if not isinstance(unprotected, dict) or unprotected:
        raise MalformedMessage("unprotected header must be an empty map")
    if not isinstance(payload, bytes):
        raise MalformedMessage(
            f"payload must be a byte string (detached payloads are not supported), got "
            f"{kind_name(payload)}"
        )
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
        size = f" of {len(signature)} bytes" if isinstance(signature, bytes) else ""
        raise MalformedMessage(
            f"signature must be a byte string of {SIGNATURE_LENGTH} bytes, got "
            f"{kind_name(signature)}{size}"
        )
    return CoseSign1(raw=raw, protected=protected, kid=kid, payload=payload, signature=signature)


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A parsed device message: the exact bytes, the COSE parts and the typed payload.

    Parsing checks form only; call :meth:`verify` with the device key to check the signature.
    """

    raw: bytes
    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes
    message: AnyMessage

    @property
    def sha256(self) -> bytes:
        """SHA-256 of :attr:`raw`: the ``msg`` hash in receipts and log entries."""
        return hashlib.sha256(self.raw).digest()

    def verify(self, public_key: bytes) -> None:
        """Check the kid and the Ed25519 signature against the device's public key.

        Raises :class:`~tracecore.errors.UnknownKey` if ``kid != device_kid(public_key)`` and
        :class:`~tracecore.errors.BadSignature` if the signature over the Sig_structure
        (RFC 9052 §4.4) fails; :class:`~tracecore.errors.KeyFileError` if ``public_key`` is
        not 32 bytes.
        """
        verify_signature(self.kid, self.protected, self.payload, self.signature, public_key)


def sign_message(message: AnyMessage, signing_key: nacl.signing.SigningKey) -> bytes:
    """Return the tagged COSE_Sign1 bytes a device sends for ``message``.

    The payload is :func:`tracecore.message.encode_payload` (deterministic CBOR), signed with
    :func:`sign_cose`. Deterministic: the same message and key always give the same bytes.
    Raises :class:`~tracecore.errors.MalformedMessage` if the result would exceed
    :data:`MAX_MESSAGE_BYTES` (a device must not send what the service refuses).
    """
    raw = sign_cose(encode_payload(message), signing_key)
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(
            f"message is {len(raw)} bytes, more than the {MAX_MESSAGE_BYTES}-byte limit"
        )
    return raw


# The envelope every well-formed device message starts with, in deterministic CBOR
# (RFC 8949 §4.2.1): tag 18 (d2), an array of 4 (84), the protected header as a 13-byte string
# (4d) holding the map of 2 (a2) {1 (01): -8 (27), 4 (04): bstr(8) (48) kid}. The kid and then
# the unprotected empty map (a0) follow, the payload byte string, and the signature, a 64-byte
# string (58 40). RFC 9052 §4.2, §3.1; RFC 9053 §2.2.
_ENVELOPE_PREFIX: Final = b"\xd2\x84\x4d\xa2\x01\x27\x04\x48"
_PROTECTED: Final = slice(3, 16)
_KID: Final = slice(8, 16)
_UNPROTECTED_AT: Final = 16
_PAYLOAD_HEAD_AT: Final = 17
_EMPTY_MAP: Final = 0xA0
_SIGNATURE_PART: Final = len(_SIGNATURE_HEAD) + SIGNATURE_LENGTH
_SHORTEST_ENVELOPE: Final = _PAYLOAD_HEAD_AT + 1 + _SIGNATURE_PART


def _payload_span(raw: bytes) -> tuple[int, int] | None:
    """Where the payload of ``raw`` starts and ends, if its head is the shortest (§4.2.1)."""
    first = raw[_PAYLOAD_HEAD_AT]
    start = _PAYLOAD_HEAD_AT + 1
    if 0x40 <= first <= 0x57:  # byte string of 0-23 bytes: length in the initial byte
        return start, start + first - 0x40
    if first == 0x58:  # 1-byte length, 24-255 in the shortest form
        size = raw[start]
        return (start + 1, start + 1 + size) if size >= 24 else None
    if first == 0x59:  # 2-byte length, 256-65535 in the shortest form
        size = int.from_bytes(raw[start : start + 2], "big")
        return (start + 2, start + 2 + size) if size >= 0x100 else None
    return None  # longer lengths exceed MAX_MESSAGE_BYTES: left to the strict parser


def _parse_cose_fast(raw: bytes) -> CoseSign1 | None:
    """``parse_cose(raw)`` for bytes laid out exactly as a deterministic envelope, else None.

    Bytes that match the layout byte for byte are the deterministic encoding of
    ``18([<<{1: -8, 4: kid}>>, {}, payload, signature])`` with a 64-byte signature, which
    :func:`parse_cose` accepts with these very parts; anything else returns None (no verdict).
    """
    if (
        type(raw) is not bytes
        or not _SHORTEST_ENVELOPE <= len(raw) <= MAX_MESSAGE_BYTES
        or not raw.startswith(_ENVELOPE_PREFIX)
        or raw[_UNPROTECTED_AT] != _EMPTY_MAP
    ):
        return None
    span = _payload_span(raw)
    if span is None:
        return None
    start, end = span
    if len(raw) != end + _SIGNATURE_PART or raw[end : end + 2] != _SIGNATURE_HEAD:
        return None
    return CoseSign1(
        raw=raw,
        protected=raw[_PROTECTED],
        kid=raw[_KID],
        payload=raw[start:end],
        signature=raw[end + 2 :],
    )


def _parse_message_fast(raw: bytes) -> SignedMessage | None:
    """:func:`_parse_message_strict`'s message for the common well-formed shape, else None.

    The envelope by its exact layout (:func:`_parse_cose_fast`), the payload by
    :func:`tracecore.cbor.decode_fast`, the field rules by
    :func:`tracecore.message.try_from_cbor_map` (the same rules, checked once). It decides
    acceptance only: on any doubt and on any broken rule it returns None, and the strict parser
    gives the verdict and the detail.
    """
    cose = _parse_cose_fast(raw)
    if cose is None:
        return None
    payload = decode_fast(cose.payload)
    if payload is UNDECIDED:
        return None
    message = try_from_cbor_map(payload)
    if message is None:
        return None
    return _signed(cose, message)


def _signed(cose: CoseSign1, message: AnyMessage) -> SignedMessage:
    """A parsed message from its envelope and its payload."""
    return SignedMessage(
        raw=cose.raw,
        protected=cose.protected,
        kid=cose.kid,
        payload=cose.payload,
        signature=cose.signature,
        message=message,
    )


def _parse_message_strict(raw: bytes) -> SignedMessage:
    """The reference parser: :func:`parse_cose`, then :func:`decode_payload`'s every rule."""
    cose = parse_cose(raw)
    message = decode_payload(cose.payload)
    return _signed(cose, message)


def parse_message(raw: bytes) -> SignedMessage:
    """Parse a device message: COSE envelope (:func:`parse_cose`) and payload field rules.

    Needs no key and checks no signature (see :meth:`SignedMessage.verify`). Raises
    :class:`~tracecore.errors.MalformedMessage` for anything else than a well-formed message
    of at most :data:`MAX_MESSAGE_BYTES` bytes; never any other exception for any input bytes.

    Well-formed messages take a fast path that gives the same result as the strict parser
    (docs/benchmarks.md, "Parsing device messages"); everything else, and every refusal with its
    detail, comes from the strict parser.
    """
    fast = _parse_message_fast(raw)
    return fast if fast is not None else _parse_message_strict(raw)
