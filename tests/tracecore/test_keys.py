"""Tests of tracecore.keys: C2SP key ids and vkeys, key files, device kids."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tracecore.errors import KeyFileError
from tracecore.keys import (
    KEY_START_TOLERANCE_MS,
    SignerKey,
    VerifierKey,
    device_kid,
    generate_signer,
    key_window_refusal,
    note_key_id,
    read_key_file,
    write_key_file,
)

SHARED = Path(os.environ.get("AGRITRACE_SHARED_DIR", Path(__file__).parents[3] / "shared"))
NOTE_VECTORS: dict[str, Any] = json.loads(
    (SHARED / "vectors" / "signed-note" / "vectors.json").read_text()
)


def test_spec_example_vkey_parses_and_round_trips() -> None:
    """The vkey of the C2SP signed-note example parses and prints back unchanged."""
    text = NOTE_VECTORS["spec_example"]["vkey"]
    vkey = VerifierKey.parse(text)
    assert vkey.name == "example.com/foo"
    assert vkey.key_id.hex() == "530d903a"
    assert str(vkey) == text


def test_go_skey_gives_the_go_vkey() -> None:
    """The skey of golang.org/x/mod's note tests derives exactly its vkey."""
    vec = NOTE_VECTORS["go_deterministic_signing"]
    skey = SignerKey.parse(vec["skey"])
    assert str(skey.verifier) == vec["vkey"]
    assert str(skey) == vec["skey"]


def test_go_deterministic_signature() -> None:
    """Signing the Go test text yields the Go test's signature bytes (Ed25519 is deterministic)."""
    vec = NOTE_VECTORS["go_deterministic_signing"]
    skey = SignerKey.parse(vec["skey"])
    expected = base64.b64decode(vec["signature_line_base64"])
    assert skey.verifier.key_id + skey.sign(vec["text"].encode()) == expected


def test_second_signer_verifies() -> None:
    """A signature by another Go test key verifies under its vkey and fails on changed text."""
    vec = NOTE_VECTORS["go_second_signer"]
    raw = base64.b64decode(vec["pubkey_base64_with_type"])
    vkey = VerifierKey(vec["name"], raw[1:], raw[0])
    blob = base64.b64decode(vec["signature_line_base64"])
    assert blob[:4] == vkey.key_id
    assert vkey.verify(vec["text"].encode(), blob[4:])
    assert not vkey.verify(vec["text"].encode() + b"!", blob[4:])


def test_key_id_rule_matches_its_definition() -> None:
    """The key id is SHA-256(name || LF || type || key)[:4], for both signature types."""
    key = bytes(range(32))
    assert note_key_id("w", key, 0x04) == hashlib.sha256(b"w\n\x04" + key).digest()[:4]
    assert note_key_id("w", key) == hashlib.sha256(b"w\n\x01" + key).digest()[:4]


def test_device_kid_is_sha256_prefix() -> None:
    """A device kid is the first 8 bytes of SHA-256 of the raw public key."""
    key = bytes(32)
    assert device_kid(key) == bytes.fromhex("66687aadf862bd77")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name+530d903a", "three"),
        ("example.com/foo+00000000+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example.com/foo+530d903a+not-base64!", "base64"),
        ("example.com/foo+530d903a+AQID", "32 key bytes"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "non-empty"),
        ("a b+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "spaces"),
        ("x+530d903a+" + base64.b64encode(b"\x07" + bytes(32)).decode(), "signature type"),
    ],
)
def test_bad_vkeys_are_rejected_with_a_reason(text: str, message: str) -> None:
    """Malformed vkeys raise KeyFileError saying what is wrong."""
    with pytest.raises(KeyFileError, match=message):
        VerifierKey.parse(text)


def test_skey_with_wrong_key_id_is_rejected() -> None:
    """An skey whose key id does not match its seed is refused."""
    good = NOTE_VECTORS["go_deterministic_signing"]["skey"]
    bad = good.replace("c74f20a3", "c74f20a4")
    with pytest.raises(KeyFileError, match="does not match"):
        SignerKey.parse(bad)


def test_signer_repr_hides_the_seed() -> None:
    """repr() of a signer shows its name and key id, never the seed."""
    key = SignerKey("log", bytes(range(32)))
    assert base64.b64encode(key.seed).decode() not in repr(key)
    assert key.seed.hex() not in repr(key)


def test_key_file_round_trip_and_modes(tmp_path: Path) -> None:
    """A written key file is 0600 in a 0700 directory and reads back as the same key."""
    keys = tmp_path / "keys"
    key = generate_signer("farm-1-gw")
    path = write_key_file(keys, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert read_key_file(keys, "farm-1-gw") == key


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    """Writing a key whose file exists fails and leaves the old key intact."""
    first = generate_signer("log")
    write_key_file(tmp_path, first)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_key_file(tmp_path, generate_signer("log"))
    assert read_key_file(tmp_path, "log") == first


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    """A key file with group or other permissions is refused, as ssh does."""
    path = write_key_file(tmp_path, generate_signer("log"))
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_key_file(tmp_path, "log")


def test_missing_key_file_says_how_to_create_it(tmp_path: Path) -> None:
    """Reading a key that does not exist points at `agritrace keys new`."""
    with pytest.raises(KeyFileError, match="agritrace keys new"):
        read_key_file(tmp_path, "log")


@pytest.mark.parametrize("name", ["../escape", ".hidden", "a+b", ""])
def test_key_names_cannot_escape_the_directory(tmp_path: Path, name: str) -> None:
    """Key names that are not plain file names are refused before touching the disk."""
    with pytest.raises(KeyFileError):
        read_key_file(tmp_path, name)


# --- key windows ---------------------------------------------------------------------------

FROM = 1_767_258_000_000
TOL = KEY_START_TOLERANCE_MS


@pytest.mark.parametrize(
    ("until", "revoked", "at", "refused"),
    [
        (None, None, FROM - TOL, None),  # a clock 5 min behind the server signs at once
        (None, None, FROM - TOL - 1, "is valid from"),
        (FROM + 10, None, FROM + 9, None),
        (FROM + 10, None, FROM + 10, "rotated out"),  # the end of a rotation is strict
        (None, FROM + 10, FROM + 10, "revoked since"),  # and so is revocation
        (None, FROM + 10, FROM - TOL, None),  # before the revocation: the key was trusted
        (None, FROM, FROM - 1, "is valid from"),  # revoked since issue: never signs
        (None, FROM - TOL, FROM - TOL - 1, "is valid from"),
        (FROM, None, FROM - 1, "is valid from"),  # rotated out at once: never signs
    ],
)
def test_key_window_tolerates_a_late_clock_only(
    until: int | None, revoked: int | None, at: int, refused: str | None
) -> None:
    """A key signs from valid_from less 5 min; rotation and revocation ends stay strict."""
    result = key_window_refusal(FROM, until, revoked, at)
    if refused is None:
        assert result is None
    else:
        assert result is not None
        assert refused in result
