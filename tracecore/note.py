"""Signed notes, checkpoints and witness cosignatures (C2SP signed-note, tlog-checkpoint,
tlog-cosignature).

Pure functions: no clock, no I/O. Three C2SP formats, byte for byte:

**Signed note** (c2sp.org/signed-note). A note is a *text* that ends in a newline (U+000A),
then one blank line, then one or more *signature lines*::

    <text, ending in "\\n">
    "\\n"
    "— " <key name> " " base64(key id (4 bytes) || signature) "\\n"     (one or more)

The signature line starts with an em dash U+2014 and a space. The text is separated from the
signatures by the *last* empty line of the note. A note is valid UTF-8 without ASCII control
characters other than newline. Verifiers ignore signatures of unknown keys (name *and* key id
must match a trusted key), verify every signature of a known key (one that fails rejects the
whole note, as the spec recommends and golang.org/x/mod/sumdb/note does) and reject a note that
no known key signed. Limits: at most :data:`MAX_SIGNATURES` signature lines and
:data:`MAX_NOTE_BYTES` bytes in all (the spec requires accepting at least 16 signatures).

**Checkpoint** (c2sp.org/tlog-checkpoint). The note text of a log's tree head: at least three
non-empty lines, the origin, the tree size in ASCII decimal without leading zeroes, the base64
root hash (RFC 6962 / RFC 9162 §2.1), then optional non-empty extension lines.

**Cosignature v1** (c2sp.org/tlog-cosignature, Ed25519 type ``0x04``). A witness's note
signature on a checkpoint whose key id is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``
and whose signature bytes are ``timestamp (u64 big-endian, POSIX seconds, ≤ 2^63-1) || Ed25519
signature`` over the message::

    "cosignature/v1\\n" "time " <timestamp in decimal> "\\n" <checkpoint text>

Signature *lines* in this module's API are strings without the final newline, e.g.
``"— witness.example/w1 jWbPPw…=="``; :func:`append_signatures` and :func:`sign_note` add the
newlines the note format needs.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from tracecore.errors import MalformedNote, UnverifiedNote
from tracecore.keys import ALG_COSIGNATURE_V1, ALG_ED25519, SignerKey, VerifierKey
from tracecore.merkle import HASH_SIZE

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "MAX_TEXT_LINES",
    "MAX_TIMESTAMP",
    "MAX_TREE_SIZE",
    "SIGNATURE_PREFIX",
    "CheckpointBody",
    "Note",
    "NoteSignature",
    "append_signatures",
    "cosign",
    "cosignature_message",
    "cosigner_verifier",
    "parse_note",
    "sign_note",
    "verify_cosignature",
    "verify_note",
]

#: C2SP signed-note: every signature line starts with an em dash (U+2014) and a space.
SIGNATURE_PREFIX: Final = "\u2014 "
#: C2SP tlog-cosignature, "Ed25519 signed message": the domain-separation header line.
COSIGNATURE_V1_HEADER: Final = "cosignature/v1\n"
#: Most signature lines a note may carry (the spec requires at least 16; Go allows 100).
MAX_SIGNATURES: Final = 100
#: Largest note (text and signatures) accepted, in UTF-8 bytes.
MAX_NOTE_BYTES: Final = 64 * 1024
#: Most lines a note text may have.
MAX_TEXT_LINES: Final = 1024
#: C2SP tlog-cosignature: a cosignature timestamp MUST NOT exceed 2^63 - 1.
MAX_TIMESTAMP: Final = 2**63 - 1
#: The largest tree size a checkpoint may state (a signed 64-bit integer, as databases store it).
MAX_TREE_SIZE: Final = 2**63 - 1

_KEY_ID_LENGTH = 4
_ED25519_SIGNATURE_LENGTH = 64
_TIMESTAMP_LENGTH = 8
# C2SP signed-note: key names are non-empty, without Unicode spaces or "+".
_NAME = re.compile(r"[^\s+]+")
# ASCII decimal without leading zeroes (C2SP tlog-checkpoint tree size, tlog-witness old size).
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a signed note: key name, 4-byte key id, signature bytes.

    ``signature`` is what follows the key id: 64 bytes for Ed25519 (type 0x01), 8 + 64 bytes
    (timestamp and signature) for a cosignature v1 (type 0x04).
    """

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise MalformedNote(f"signature key name {self.name!r} is empty or has spaces or '+'")
        if len(self.key_id) != _KEY_ID_LENGTH:
            raise MalformedNote(f"a key id is 4 bytes, got {len(self.key_id)}")
        if not self.signature:
            raise MalformedNote("a signature line carries no signature bytes")

    @property
    def line(self) -> str:
        """The signature line without its final newline: ``— name base64(key id || sig)``."""
        blob = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIGNATURE_PREFIX}{self.name} {blob}"

    @classmethod
    def parse_line(cls, line: str) -> NoteSignature:
        """Parse one signature line (with or without its final newline).

        Raises :class:`MalformedNote` when the line does not read ``— <name> <base64>`` with a
        valid name and at least 5 decoded bytes (C2SP signed-note, "Format").
        """
        if line.endswith("\n"):
            line = line[:-1]
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedNote("a signature line must start with an em dash and a space")
        name, space, blob = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not space or not blob:
            raise MalformedNote("a signature line reads '— <key name> <base64 signature>'")
        raw = _b64decode(blob, "signature")
        if len(raw) <= _KEY_ID_LENGTH:
            raise MalformedNote("a signature is a 4-byte key id followed by signature bytes")
        return cls(name=name, key_id=raw[:_KEY_ID_LENGTH], signature=raw[_KEY_ID_LENGTH:])

    def matches(self, key: VerifierKey) -> bool:
        """Return whether this signature names ``key``: same key name and same key id."""
        return self.name == key.name and self.key_id == key.key_id


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: its text (ending in a newline) and its signatures, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __str__(self) -> str:
        """Return the note in its wire form: text, blank line, one signature line each."""
        return self.text + "\n" + "".join(sig.line + "\n" for sig in self.signatures)


def sign_note(text: str, signers: Sequence[SignerKey]) -> str:
    """Sign ``text`` with each Ed25519 key of ``signers`` (type 0x01) and return the note.

    C2SP signed-note, "Ed25519 signatures": each signature is Ed25519 (RFC 8032, deterministic)
    over the UTF-8 text, prefixed by the signer's key id. Raises :class:`MalformedNote` when the
    text is not valid note text (see :func:`parse_note`) or no signer is given.
    """
    _check_text(text)
    if not signers:
        raise MalformedNote("a signed note needs at least one signature")
    message = text.encode("utf-8")
    signatures = tuple(
        NoteSignature(key.name, key.verifier.key_id, key.sign(message)) for key in signers
    )
    return str(_checked(Note(text, signatures)))


def append_signatures(note: str, lines: Iterable[str]) -> str:
    """Return ``note`` with the signature ``lines`` appended (e.g. witness cosignatures).

    Each line is checked for form (not for validity: that is :func:`verify_note`'s job) and may
    come with or without its final newline. A line already present is not added twice.
    """
    parsed = parse_note(note)
    signatures = list(parsed.signatures)
    for line in lines:
        signature = NoteSignature.parse_line(line)
        if signature not in signatures:
            signatures.append(signature)
    return str(_checked(Note(parsed.text, tuple(signatures))))


def parse_note(note: str | bytes) -> Note:
    """Parse a signed note without verifying it; raises :class:`MalformedNote`.

    C2SP signed-note, "Format": valid UTF-8, no control characters except newline, the text
    (ending in newline) separated from the signature lines by the note's last empty line, one or
    more signature lines each ending in a newline; at most :data:`MAX_NOTE_BYTES` bytes and
    :data:`MAX_SIGNATURES` signatures.
    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise MalformedNote(f"a note is at most {MAX_NOTE_BYTES} bytes")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNote("a note must be valid UTF-8") from exc
    _check_chars(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNote("a note needs a blank line between its text and its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise MalformedNote("a note needs at least one signature line")
    if not block.endswith("\n"):
        raise MalformedNote("every signature line must end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"a note carries at most {MAX_SIGNATURES} signatures")
    parsed = Note(text, tuple(NoteSignature.parse_line(line) for line in lines))
    _check_text(text)
    return parsed


def verify_note(note: str | bytes | Note, verifiers: Iterable[VerifierKey]) -> tuple[str, ...]:
    """Verify ``note`` and return the names of the trusted keys that signed it, in order.

    C2SP signed-note, "Signatures": a signature whose key name and key id match no key of
    ``verifiers`` is ignored; one that matches is verified and, if it fails, the whole note is
    rejected; at least one must verify. Type 0x01 keys verify Ed25519 over the text; type 0x04
    keys (witnesses) verify a tlog-cosignature/v1 over the text (which must then be a
    checkpoint). Raises :class:`MalformedNote` for a malformed note and :class:`UnverifiedNote`
    when no trusted signature verifies or a known key's signature is bad.
    """
    parsed = note if isinstance(note, Note) else parse_note(note)
    keys = list(verifiers)
    names: list[str] = []
    for signature in parsed.signatures:
        for key in keys:
            if signature.matches(key):
                _verify_one(parsed.text, signature, key)
                if key.name not in names:
                    names.append(key.name)
    if not names:
        raise UnverifiedNote("no signature of a trusted key on the note")
    return tuple(names)


@dataclass(frozen=True, slots=True)
class CheckpointBody:
    """The text of a C2SP tlog-checkpoint: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise MalformedNote("a checkpoint origin is one non-empty line")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedNote(f"a checkpoint size is an integer in [0, {MAX_TREE_SIZE}]")
        if len(self.root_hash) != HASH_SIZE:
            raise MalformedNote(f"a checkpoint root hash is {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or "\n" in line or _CONTROL.search(line):
                raise MalformedNote("checkpoint extension lines are single non-empty lines")

    def format(self) -> str:
        """Return the checkpoint text: ``origin\\nsize\\nbase64(root)\\n`` + extension lines."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii")]
        return "".join(line + "\n" for line in [*lines, *self.extensions])

    def __str__(self) -> str:
        """The checkpoint text, as :meth:`format` returns it."""
        return self.format()

    @classmethod
    def parse(cls, text: str) -> CheckpointBody:
        """Parse a checkpoint text (the note text, not the signed note); raises MalformedNote.

        C2SP tlog-checkpoint, "Note text": at least three non-empty newline-terminated lines;
        the size in ASCII decimal without leading zeroes; the root hash in canonical base64 of
        exactly 32 bytes.
        """
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise MalformedNote("a checkpoint is at least three non-empty lines")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size):
            raise MalformedNote(f"checkpoint size {size!r} is not a decimal without leading zeros")
        root_hash = _b64decode(root, "checkpoint root hash")
        return cls(origin, int(size), root_hash, tuple(extensions))


def cosigner_verifier(key: SignerKey | VerifierKey) -> VerifierKey:
    """Return the cosignature (type 0x04) vkey of a witness key (C2SP tlog-cosignature)."""
    public_key = key.public_key
    return VerifierKey(key.name, public_key, ALG_COSIGNATURE_V1)


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """Return the bytes a tlog-cosignature/v1 signs.

    C2SP tlog-cosignature, "Ed25519 signed message": ``cosignature/v1\\n``, ``time <ts>\\n``
    (decimal, no leading zeroes), then the whole checkpoint text including its final newline.
    """
    CheckpointBody.parse(checkpoint_text)
    _check_timestamp(timestamp)
    header = f"{COSIGNATURE_V1_HEADER}time {timestamp}\n"
    return (header + checkpoint_text).encode("utf-8")


def cosign(checkpoint_text: str, witness_key: SignerKey, timestamp: int) -> str:
    """Cosign a checkpoint as a witness and return the signature line (no final newline).

    C2SP tlog-cosignature, "Format": ``— <witness name> base64(key id || u64 timestamp ||
    Ed25519 signature)``, the key id of type 0x04. ``checkpoint_text`` is the note text of the
    checkpoint (see :class:`CheckpointBody`), ``timestamp`` POSIX seconds. Raises
    :class:`MalformedNote` for a text that is not a checkpoint or a timestamp out of range.
    """
    message = cosignature_message(checkpoint_text, timestamp)
    signature = struct.pack(">Q", timestamp) + witness_key.sign(message)
    key_id = cosigner_verifier(witness_key).key_id
    return NoteSignature(witness_key.name, key_id, signature).line


def verify_cosignature(checkpoint_text: str, line: str, witness: VerifierKey) -> int:
    """Verify one cosignature line on a checkpoint text and return its timestamp.

    ``witness`` is the witness's cosignature vkey (type 0x04; a type 0x01 vkey of the same key
    is converted). Raises :class:`UnverifiedNote` when the line is not by that key or does not
    verify, :class:`MalformedNote` when it is not a well-formed cosignature line.
    """
    key = cosigner_verifier(witness)
    signature = NoteSignature.parse_line(line)
    if not signature.matches(key):
        raise UnverifiedNote(f"the cosignature is not by witness key {key.name}+{key.key_id.hex()}")
    return _verify_one(checkpoint_text, signature, key)


def _verify_one(text: str, signature: NoteSignature, key: VerifierKey) -> int:
    """Verify ``signature`` by ``key`` over ``text``; return the cosignature time (0 for 0x01)."""
    if key.alg == ALG_ED25519:
        if not key.verify(text.encode("utf-8"), signature.signature):
            raise UnverifiedNote(f"the signature of {key.name} does not verify")
        return 0
    if key.alg == ALG_COSIGNATURE_V1:
        if len(signature.signature) != _TIMESTAMP_LENGTH + _ED25519_SIGNATURE_LENGTH:
            raise UnverifiedNote(f"the cosignature of {key.name} is not 8 + 64 bytes")
        (timestamp,) = struct.unpack(">Q", signature.signature[:_TIMESTAMP_LENGTH])
        if timestamp > MAX_TIMESTAMP:
            raise UnverifiedNote(f"the cosignature of {key.name} has a timestamp above 2^63-1")
        message = cosignature_message(text, timestamp)
        if not key.verify(message, signature.signature[_TIMESTAMP_LENGTH:]):
            raise UnverifiedNote(f"the cosignature of {key.name} does not verify")
        return int(timestamp)
    raise UnverifiedNote(f"unsupported signature type 0x{key.alg:02x}")  # pragma: no cover


def _checked(note: Note) -> Note:
    """Return ``note`` after checking the limits of its wire form."""
    if len(note.signatures) > MAX_SIGNATURES:
        raise MalformedNote(f"a note carries at most {MAX_SIGNATURES} signatures")
    if len(str(note).encode("utf-8")) > MAX_NOTE_BYTES:
        raise MalformedNote(f"a note is at most {MAX_NOTE_BYTES} bytes")
    return note


def _check_chars(text: str) -> None:
    """Reject text a note cannot carry: control characters, lone surrogates, oversize."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise MalformedNote("a note must be valid UTF-8") from exc
    if size > MAX_NOTE_BYTES:
        raise MalformedNote(f"a note is at most {MAX_NOTE_BYTES} bytes")
    if _CONTROL.search(text):
        raise MalformedNote("a note must not contain control characters other than newline")


def _check_text(text: str) -> None:
    """Check the rules of a note text: characters, final newline, line count."""
    _check_chars(text)
    if not text.endswith("\n"):
        raise MalformedNote("a note text must end in a newline")
    if text.count("\n") > MAX_TEXT_LINES:
        raise MalformedNote(f"a note text has at most {MAX_TEXT_LINES} lines")


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedNote(f"a cosignature timestamp is an integer in [0, {MAX_TIMESTAMP}]")


def _b64decode(text: str, what: str) -> bytes:
    """Decode canonical standard base64 (RFC 4648 §4); raise MalformedNote otherwise."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedNote(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise MalformedNote(f"{what} is not canonical base64")
    return raw
