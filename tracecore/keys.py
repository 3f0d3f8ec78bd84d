"""Ed25519 keys: device key ids, C2SP signer and verifier keys, key files.

Every agritrace key (a device's, the log's, a witness's) is an Ed25519 key. Two textual forms
come from the C2SP signed-note specification and are what outside tools understand:

* a **vkey** (verifier key), public: ``<name>+<hex key id>+<base64(0x01 || public key)>``;
* an **skey** (signer key), secret: ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``.

The key id is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` (C2SP signed-note, "Verifier
keys"). Devices do not use it on the wire: a COSE message names its key by :func:`device_kid`.

Key files hold one skey line, live under ``AGRITRACE_DATA_DIR/keys/`` and are created with mode
0600 in a 0700 directory; reading refuses a file that others can read, as ssh does.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import nacl.exceptions
import nacl.signing

from tracecore.errors import KeyFileError

__all__ = [
    "ALG_COSIGNATURE_V1",
    "ALG_ED25519",
    "KEY_START_TOLERANCE_MS",
    "KID_LENGTH",
    "LOG_KEY_FILE",
    "SignerKey",
    "VerifierKey",
    "device_fingerprint",
    "device_kid",
    "generate_signer",
    "key_window_refusal",
    "kid_fingerprint",
    "load_or_create_log_key",
    "note_key_id",
    "read_key_file",
    "read_log_key",
    "write_key_file",
]

KID_LENGTH = 8
#: How long before its ``valid_from`` a device key already signs (docs/protocol.md §8, "Clock";
#: docs/keys.md): the 5 minutes a device clock may differ from the server's, which stamped
#: ``valid_from`` at registration or rotation. A fixed protocol constant, not a setting: every
#: verifier of a bundle must draw the same windows as ingest did.
KEY_START_TOLERANCE_MS: Final = 5 * 60_000
ALG_ED25519 = 0x01  # C2SP signed-note: Ed25519 signature type
ALG_COSIGNATURE_V1 = 0x04  # C2SP tlog-cosignature: the witness cosignature type

# C2SP signed-note: a key name is non-empty, has no Unicode spaces and no "+".
_NAME = re.compile(r"[^\s+]+")
_KEY_FILE_SUFFIX = ".key"
#: File name (without ``.key``) of the log's key. The key inside is named after the log's
#: origin, as C2SP tlog-checkpoint recommends, so its vkey name matches checkpoint origins.
LOG_KEY_FILE: Final = "log"


def key_window_refusal(
    valid_from_ms: int, valid_until_ms: int | None, revoked_ms: int | None, at_ms: int
) -> str | None:
    """Say why a device key may not sign a message of device time ``at_ms``, or return None.

    The window is ``valid_from_ms - KEY_START_TOLERANCE_MS <= at_ms``, ``at_ms < valid_until_ms``
    (when set: rotated out) and ``at_ms < revoked_ms`` (when set: compromised since then). The
    two ends are strict (docs/keys.md): the tolerance only meets a device whose clock is behind
    the server's, and never lets a rotated-out or revoked key sign later. A key whose
    window closed at or before its ``valid_from`` (revoked since it was issued) gets no
    tolerance either: it never signs anything, whatever time a holder of it writes.

    Args:
        valid_from_ms: the server time the key was registered or rotated in.
        valid_until_ms: when it was rotated out, or None.
        revoked_ms: since when it must not be trusted, or None.
        at_ms: the message's device time (its ``time`` field).

    Returns:
        None if the key may sign at ``at_ms``, else the end of a sentence ("is valid from ...,
        message time ...") for a ``revoked_key`` detail.
    """
    ends = [t for t in (valid_until_ms, revoked_ms) if t is not None]
    start = valid_from_ms
    if all(end > valid_from_ms for end in ends):
        start -= KEY_START_TOLERANCE_MS
    if at_ms < start:
        if start == valid_from_ms:
            return f"is valid from {valid_from_ms}, message time {at_ms}"
        return (
            f"is valid from {start} (valid_from {valid_from_ms} less the clock tolerance), "
            f"message time {at_ms}"
        )
    if valid_until_ms is not None and at_ms >= valid_until_ms:
        return f"was rotated out at {valid_until_ms}, message time {at_ms}"
    if revoked_ms is not None and at_ms >= revoked_ms:
        return f"is revoked since {revoked_ms}, message time {at_ms}"
    return None


def device_kid(public_key: bytes) -> bytes:
    """Return the COSE ``kid`` of an Ed25519 public key: the first 8 bytes of its SHA-256.

    design.md, "Device protocol". The same rule names the log key in receipts.

    Raises :class:`KeyFileError` when ``public_key`` is not 32 bytes.
    """
    _check_public_key(public_key)
    return hashlib.sha256(public_key).digest()[:KID_LENGTH]


def device_fingerprint(public_key: bytes) -> str:
    """Return the fingerprint people compare: the device kid in hex, in groups of four digits.

    For example ``3f2a-91c0-7b1e-55d4``: the 8 bytes of :func:`device_kid`, so the gateway,
    the console and ``agritrace gateway-key`` show the same 19 characters for the same key
    (docs/gateway.md). Raises :class:`KeyFileError` when ``public_key`` is not 32 bytes.
    """
    return kid_fingerprint(device_kid(public_key))


def kid_fingerprint(kid: bytes) -> str:
    """Return the fingerprint of a key known by its kid: hex digits in groups of four."""
    digits = kid.hex()
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def note_key_id(name: str, public_key: bytes, alg: int = ALG_ED25519) -> bytes:
    """Return the 4-byte C2SP key id of a named key.

    # C2SP signed-note, "Signatures": key ID = SHA-256(name || 0x0A || type || key)[:4]
    """
    _check_name(name)
    _check_public_key(public_key)
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named Ed25519 public key, as written in a C2SP vkey."""

    name: str
    public_key: bytes
    alg: int = ALG_ED25519

    def __post_init__(self) -> None:
        _check_name(self.name)
        _check_public_key(self.public_key)
        if self.alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise KeyFileError(f"unsupported vkey signature type 0x{self.alg:02x}")

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key id."""
        return note_key_id(self.name, self.public_key, self.alg)

    @property
    def kid(self) -> bytes:
        """The 8-byte COSE key id used by devices and receipts."""
        return device_kid(self.public_key)

    def __str__(self) -> str:
        """Return the vkey text ``name+keyid+base64(alg || key)``."""
        blob = base64.b64encode(bytes([self.alg]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse a vkey; raises :class:`KeyFileError` naming what is wrong.

        The key id in the text must match the one computed from name and key.
        """
        parts = text.strip().split("+", 2)  # base64 may contain "+"
        if len(parts) != 3:
            raise KeyFileError("a vkey has three '+'-separated parts: name+keyid+key")
        name, hex_id, blob = parts
        raw = _b64(blob, "vkey key")
        if len(raw) != 33:
            raise KeyFileError(f"a vkey key is 1 type byte and 32 key bytes, got {len(raw)}")
        key = cls(name=name, public_key=raw[1:], alg=raw[0])
        if hex_id.lower() != key.key_id.hex():
            raise KeyFileError(f"vkey key id {hex_id} does not match its key ({key.key_id.hex()})")
        return key

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, TypeError):
            return False
        return True


@dataclass(frozen=True, slots=True)
class SignerKey:
    """A named Ed25519 private key (the 32-byte seed), as written in a C2SP skey."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        _check_name(self.name)
        if len(self.seed) != 32:
            raise KeyFileError(f"an Ed25519 seed is 32 bytes, got {len(self.seed)}")

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        """The PyNaCl signing key."""
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return bytes(self.signing_key.verify_key)

    @property
    def verifier(self) -> VerifierKey:
        """The matching public :class:`VerifierKey`."""
        return VerifierKey(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message`` (deterministic, RFC 8032)."""
        return self.signing_key.sign(message).signature

    def __str__(self) -> str:
        """Return the skey text ``PRIVATE+KEY+name+keyid+base64(0x01 || seed)``."""
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{blob}"

    def __repr__(self) -> str:
        """Never show the seed."""
        return f"SignerKey(name={self.name!r}, key_id={self.verifier.key_id.hex()})"

    @classmethod
    def parse(cls, text: str) -> SignerKey:
        """Parse an skey; raises :class:`KeyFileError` naming what is wrong."""
        parts = text.strip().split("+", 4)  # base64 may contain "+"
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise KeyFileError("an skey reads PRIVATE+KEY+name+keyid+key")
        name, hex_id, blob = parts[2:]
        raw = _b64(blob, "skey key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise KeyFileError("an skey key is the byte 0x01 followed by a 32-byte Ed25519 seed")
        key = cls(name=name, seed=raw[1:])
        if hex_id.lower() != key.verifier.key_id.hex():
            raise KeyFileError(f"skey key id {hex_id} does not match its key")
        return key


def generate_signer(name: str) -> SignerKey:
    """Return a new random :class:`SignerKey` named ``name`` (seed from the OS CSPRNG)."""
    return SignerKey(name=name, seed=bytes(nacl.signing.SigningKey.generate()))


def write_key_file(keys_dir: Path, key: SignerKey, file_name: str | None = None) -> Path:
    """Write ``key`` to ``keys_dir/<file_name>.key`` with mode 0600 and return the path.

    ``file_name`` defaults to the key's name. The directory is created with mode 0700. An
    existing key file is never overwritten (:class:`KeyFileError`): losing a log or device key
    breaks every proof made with it.
    """
    path = _key_path(keys_dir, file_name or key.name)
    keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        # O_EXCL: refuse to replace a key; the mode applies from the first byte on.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"key file {path} exists already; refusing to overwrite it") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from exc
    try:
        os.write(fd, (str(key) + "\n").encode())
        os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return path


def read_key_file(keys_dir: Path, name: str, file_name: str | None = None) -> SignerKey:
    """Read the key ``name`` from ``keys_dir/<file_name>.key`` (``file_name`` defaults to ``name``).

    Raises :class:`KeyFileError` when the file is missing, readable by group or others, or not
    an skey of that name.
    """
    path = _key_path(keys_dir, file_name or name)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise KeyFileError(f"no key file {path}; create it with `agritrace keys new`") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is accessible by others; chmod 600 it")
    key = SignerKey.parse(text)
    if key.name != name:
        raise KeyFileError(f"key file {path} holds the key {key.name!r}, not {name!r}")
    return key


def read_log_key(keys_dir: Path, origin: str) -> SignerKey:
    """Read the log's key (``keys_dir/log.key``), which must be named ``origin``."""
    return read_key_file(keys_dir, origin, LOG_KEY_FILE)


def load_or_create_log_key(keys_dir: Path, origin: str) -> tuple[SignerKey, bool]:
    """Return the log's key named ``origin`` and whether it was created just now.

    The key lives in ``keys_dir/log.key``. A missing file is created with a new random key;
    an existing one named after another origin is a :class:`KeyFileError`, because every
    checkpoint and receipt ever signed depends on that key.
    """
    path = _key_path(keys_dir, LOG_KEY_FILE)
    if path.exists():
        return read_log_key(keys_dir, origin), False
    key = generate_signer(origin)
    write_key_file(keys_dir, key, LOG_KEY_FILE)
    return key, True


def _key_path(keys_dir: Path, name: str) -> Path:
    _check_name(name)
    if "/" in name or name.startswith("."):
        # Key names become file names; this keeps them inside keys_dir.
        raise KeyFileError(f"key name {name!r} cannot be used as a file name")
    return keys_dir / f"{name}{_KEY_FILE_SUFFIX}"


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise KeyFileError(f"key name {name!r} must be non-empty, without spaces or '+'")


def _check_public_key(public_key: bytes) -> None:
    if len(public_key) != 32:
        raise KeyFileError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"{what} is not valid base64") from exc
