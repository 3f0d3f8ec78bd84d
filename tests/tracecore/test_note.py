"""Tests of tracecore.note: C2SP signed notes, checkpoints and tlog-cosignature/v1."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from tracecore.errors import MalformedNote, NoteError, UnverifiedNote
from tracecore.keys import ALG_COSIGNATURE_V1, SignerKey, VerifierKey
from tracecore.note import (
    MAX_SIGNATURES,
    MAX_TIMESTAMP,
    CheckpointBody,
    NoteSignature,
    append_signatures,
    cosign,
    cosignature_message,
    cosigner_verifier,
    parse_note,
    sign_note,
    verify_cosignature,
    verify_note,
)

SHARED = Path(os.environ.get("AGRITRACE_SHARED_DIR", Path(__file__).parents[3] / "shared"))
VECTORS: dict[str, Any] = json.loads(
    (SHARED / "vectors" / "signed-note" / "vectors.json").read_text()
)
GO = VECTORS["go_deterministic_signing"]
SECOND = VECTORS["go_second_signer"]
LOG = SignerKey("example.com/log", bytes(range(32)))
WITNESS = SignerKey("witness.example/w1", bytes(range(1, 33)))
ROOT = hashlib.sha256(b"root").digest()
CHECKPOINT = CheckpointBody("example.com/log", 20852163, ROOT)


def _second_vkey() -> VerifierKey:
    raw = base64.b64decode(SECOND["pubkey_base64_with_type"])
    return VerifierKey(SECOND["name"], raw[1:], raw[0])


# --- signed notes ---------------------------------------------------------------------------


def test_spec_example_verifies() -> None:
    """The C2SP signed-note example verifies under its vkey and parses into text + one line."""
    example = VECTORS["spec_example"]
    note = parse_note(example["note"])
    assert note.text == "This is an example message.\n"
    assert [sig.name for sig in note.signatures] == ["example.com/foo"]
    assert str(note) == example["note"]
    assert verify_note(example["note"], [VerifierKey.parse(example["vkey"])]) == (
        "example.com/foo",
    )


def test_go_deterministic_signature_is_reproduced_exactly() -> None:
    """Signing the Go test text gives byte for byte the Go note (em dash line, base64)."""
    note = sign_note(GO["text"], [SignerKey.parse(GO["skey"])])
    assert note == f"{GO['text']}\n\u2014 PeterNeumann {GO['signature_line_base64']}\n"
    assert verify_note(note, [VerifierKey.parse(GO["vkey"])]) == ("PeterNeumann",)


def test_second_signer_verifies_and_both_names_are_returned() -> None:
    """A note with the Go second signer's line verifies under both keys, in line order."""
    note = append_signatures(
        sign_note(GO["text"], [SignerKey.parse(GO["skey"])]),
        [f"\u2014 {SECOND['name']} {SECOND['signature_line_base64']}"],
    )
    assert verify_note(note, [_second_vkey()]) == ("EnochRoot",)
    assert verify_note(note, [_second_vkey(), VerifierKey.parse(GO["vkey"])]) == (
        "PeterNeumann",
        "EnochRoot",
    )


def test_tampered_text_fails() -> None:
    """Changing one character of the text makes the known signature fail."""
    note = sign_note(GO["text"], [SignerKey.parse(GO["skey"])]).replace("answer", "Answer")
    with pytest.raises(UnverifiedNote, match="does not verify"):
        verify_note(note, [VerifierKey.parse(GO["vkey"])])


def test_tampered_signature_fails() -> None:
    """A flipped bit in the signature (key id intact) makes the note fail."""
    raw = bytearray(base64.b64decode(GO["signature_line_base64"]))
    raw[10] ^= 1
    note = f"{GO['text']}\n\u2014 PeterNeumann {base64.b64encode(raw).decode()}\n"
    with pytest.raises(UnverifiedNote):
        verify_note(note, [VerifierKey.parse(GO["vkey"])])


def test_unknown_signers_are_ignored_but_one_known_is_required() -> None:
    """Lines of unknown keys (other name, or same name with another id) are skipped."""
    note = sign_note(GO["text"], [SignerKey.parse(GO["skey"]), LOG])
    assert verify_note(note, [VerifierKey.parse(GO["vkey"])]) == ("PeterNeumann",)
    with pytest.raises(UnverifiedNote, match="no signature of a trusted key"):
        verify_note(note, [_second_vkey()])
    impostor = VerifierKey("PeterNeumann", LOG.public_key)  # same name, other key id
    with pytest.raises(UnverifiedNote):
        verify_note(note, [impostor])


def test_note_text_may_contain_blank_lines() -> None:
    """The text ends at the note's last blank line, so texts with blank lines round trip."""
    text = "first\n\nthird\n\n"
    note = sign_note(text, [LOG])
    assert parse_note(note).text == text
    assert verify_note(note, [LOG.verifier]) == ("example.com/log",)


@pytest.mark.parametrize(
    ("note", "message"),
    [
        ("text\n", "blank line"),
        ("text\n\n", "at least one signature"),
        ("text\n\n\u2014 a AAAAAAA=", "end in a newline"),
        ("text\n\n- a AAAAAAA=\n", "em dash"),
        ("text\n\n\u2014 a\n", "reads"),
        ("text\n\n\u2014 a !!!!\n", "base64"),
        ("text\n\n\u2014 a AAAA\n", "key id followed by"),
        ("text\n\n\u2014 a AAAAAAA\n", "base64"),
        ("text\n\n\u2014 a+b AAAAAAA=\n", "name"),
        ("te\txt\n\n\u2014 a AAAAAAA=\n", "control"),
        ("text\n\n" + "\u2014 a AAAAAAA=\n" * (MAX_SIGNATURES + 1), "at most"),
        ("x" * 70_000 + "\n\n\u2014 a AAAAAAA=\n", "at most"),
    ],
)
def test_malformed_notes_are_rejected(note: str, message: str) -> None:
    """Notes breaking the C2SP signed-note format raise MalformedNote naming the rule."""
    with pytest.raises(MalformedNote, match=message):
        parse_note(note)


def test_only_lines_after_the_last_blank_line_are_signatures() -> None:
    """A signature-like line before the last blank line belongs to the text (C2SP)."""
    note = parse_note("text\n\n\u2014 a AAAAAAA=\n\n\u2014 b AAAAAAA=\n")
    assert note.text == "text\n\n\u2014 a AAAAAAA=\n"
    assert [sig.name for sig in note.signatures] == ["b"]


def test_invalid_utf8_is_rejected() -> None:
    """Notes given as bytes must be valid UTF-8."""
    with pytest.raises(MalformedNote, match="UTF-8"):
        parse_note(b"\xff\n\n\xe2\x80\x94 a AAAAAAA=\n")


def test_sign_note_requires_a_final_newline_and_a_signer() -> None:
    """Text without a final newline, or no signer, cannot be signed."""
    with pytest.raises(MalformedNote, match="newline"):
        sign_note("no newline", [LOG])
    with pytest.raises(MalformedNote, match="at least one"):
        sign_note("text\n", [])


def test_note_errors_are_agritrace_errors() -> None:
    """Both note errors belong to the NoteError branch of the error tree."""
    assert issubclass(MalformedNote, NoteError)
    assert issubclass(UnverifiedNote, NoteError)


# --- checkpoints ----------------------------------------------------------------------------


def test_checkpoint_formats_like_the_spec_example() -> None:
    """The tlog-checkpoint example text parses and formats back unchanged."""
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    body = CheckpointBody.parse(text)
    assert body.origin == "example.com/behind-the-sofa"
    assert body.size == 20852163
    assert body.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert body.format() == text


@pytest.mark.parametrize(
    "body",
    [
        CHECKPOINT,
        CheckpointBody("o", 0, bytes(32)),
        CheckpointBody("agritrace.localhost/log", 2**63 - 1, ROOT, ("ext one", "ext2")),
    ],
)
def test_checkpoint_round_trips(body: CheckpointBody) -> None:
    """format() then parse() gives the same checkpoint, also inside a signed note."""
    assert CheckpointBody.parse(body.format()) == body
    note = sign_note(body.format(), [LOG])
    assert CheckpointBody.parse(parse_note(note).text) == body


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("o\n1\n", "three"),
        ("o\n1\n" + base64.b64encode(ROOT).decode() + "\n\next\n", "three"),
        ("o\n01\n" + base64.b64encode(ROOT).decode() + "\n", "leading"),
        ("o\n-1\n" + base64.b64encode(ROOT).decode() + "\n", "decimal"),
        ("o\n99999999999999999999\n" + base64.b64encode(ROOT).decode() + "\n", "decimal"),
        ("o\n9999999999999999999\n" + base64.b64encode(ROOT).decode() + "\n", "size"),
        ("o\n1\n" + base64.b64encode(ROOT[:31]).decode() + "\n", "32 bytes"),
        ("o\n1\nnot base64\n", "base64"),
        ("o\n1\n" + base64.b64encode(ROOT).decode(), "newline"),
    ],
)
def test_malformed_checkpoints_are_rejected(text: str, message: str) -> None:
    """Checkpoint texts breaking C2SP tlog-checkpoint raise MalformedNote."""
    with pytest.raises(MalformedNote, match=message):
        CheckpointBody.parse(text)


# --- cosignatures ---------------------------------------------------------------------------


def test_cosignature_signed_message_is_the_spec_layout() -> None:
    """The signed message is the header line, the time line, then the checkpoint text."""
    assert cosignature_message(CHECKPOINT.format(), 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/log\n20852163\n"
        + base64.b64encode(ROOT)
        + b"\n"
    )


def test_cosignature_bytes_and_key_id() -> None:
    """A cosignature is key id (type 0x04) || u64 BE timestamp || Ed25519 over the message."""
    line = cosign(CHECKPOINT.format(), WITNESS, 1679315147)
    assert line.startswith("\u2014 witness.example/w1 ")
    raw = base64.b64decode(line.split(" ")[2])
    key_id = hashlib.sha256(b"witness.example/w1\n\x04" + WITNESS.public_key).digest()[:4]
    assert raw[:4] == key_id
    assert raw[4:12] == struct.pack(">Q", 1679315147)
    message = cosignature_message(CHECKPOINT.format(), 1679315147)
    assert raw[12:] == WITNESS.sign(message)
    vkey = cosigner_verifier(WITNESS)
    assert vkey.alg == ALG_COSIGNATURE_V1
    assert VerifierKey.parse(str(vkey)) == vkey


def test_cosignature_verifies_and_returns_its_time() -> None:
    """verify_cosignature and verify_note (with a type 0x04 key) both accept a cosignature."""
    line = cosign(CHECKPOINT.format(), WITNESS, 1700000000)
    assert verify_cosignature(CHECKPOINT.format(), line, cosigner_verifier(WITNESS)) == 1700000000
    note = append_signatures(sign_note(CHECKPOINT.format(), [LOG]), [line])
    assert verify_note(note, [LOG.verifier, cosigner_verifier(WITNESS)]) == (
        "example.com/log",
        "witness.example/w1",
    )
    assert verify_note(note, [cosigner_verifier(WITNESS)]) == ("witness.example/w1",)


def test_tampered_cosignatures_fail() -> None:
    """Another checkpoint, another timestamp, or a flipped bit makes a cosignature fail."""
    line = cosign(CHECKPOINT.format(), WITNESS, 1700000000)
    vkey = cosigner_verifier(WITNESS)
    other = CheckpointBody(CHECKPOINT.origin, CHECKPOINT.size + 1, ROOT).format()
    with pytest.raises(UnverifiedNote):
        verify_cosignature(other, line, vkey)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1  # the timestamp's last byte
    moved = f"\u2014 witness.example/w1 {base64.b64encode(raw).decode()}"
    with pytest.raises(UnverifiedNote, match="does not verify"):
        verify_cosignature(CHECKPOINT.format(), moved, vkey)
    with pytest.raises(UnverifiedNote, match="not by witness key"):
        verify_cosignature(CHECKPOINT.format(), line, cosigner_verifier(LOG))


def test_an_ed25519_signature_is_not_a_cosignature() -> None:
    """The type 0x01 signature of the same key does not pass as a 0x04 cosignature."""
    note = sign_note(CHECKPOINT.format(), [WITNESS])
    with pytest.raises(UnverifiedNote):
        verify_note(note, [cosigner_verifier(WITNESS)])
    forged = NoteSignature(
        WITNESS.name, cosigner_verifier(WITNESS).key_id, parse_note(note).signatures[0].signature
    )
    with pytest.raises(UnverifiedNote, match="8 \\+ 64"):
        verify_cosignature(CHECKPOINT.format(), forged.line, cosigner_verifier(WITNESS))


def test_cosign_refuses_a_signed_note_or_a_bad_time() -> None:
    """cosign() takes the checkpoint text only, and a timestamp in [0, 2^63-1]."""
    with pytest.raises(MalformedNote):
        cosign(sign_note(CHECKPOINT.format(), [LOG]), WITNESS, 1)
    with pytest.raises(MalformedNote, match="timestamp"):
        cosign(CHECKPOINT.format(), WITNESS, MAX_TIMESTAMP + 1)
    with pytest.raises(MalformedNote, match="timestamp"):
        cosign(CHECKPOINT.format(), WITNESS, -1)


def test_append_signatures_keeps_order_and_skips_duplicates() -> None:
    """Appending lines adds each once, after the log's own signature."""
    line = cosign(CHECKPOINT.format(), WITNESS, 5)
    note = sign_note(CHECKPOINT.format(), [LOG])
    twice = append_signatures(append_signatures(note, [line + "\n"]), [line])
    assert twice == note + line + "\n"
