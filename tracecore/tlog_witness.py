"""The bodies of the C2SP tlog-witness ``add-checkpoint`` protocol (c2sp.org/tlog-witness).

Pure formats shared by the two sides: the witness service parses requests and writes
responses, the log (ingest) writes requests and parses responses. Neither imports the other.

Request (``POST <prefix>/add-checkpoint``), every line ending in a newline (U+000A)::

    old <size>\\n                     decimal, no leading zeroes ("0" for none)
    <base64 hash>\\n                  zero to 63 consistency proof lines (RFC 6962 §2.1.2)
    \\n                               an empty line
    <checkpoint as a signed note>    C2SP tlog-checkpoint, may carry several signatures

Responses: **200** with one or more cosignature lines (``— <name> <base64>\\n``); **409** with
the witness's latest cosigned size and a newline, ``Content-Type: text/x.tlog.size``; 400, 403,
404, 422 as :data:`STATUS_MEANING` says.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import httpx

from tracecore.errors import ConfigError, KeyFileError, MalformedNote
from tracecore.keys import ALG_COSIGNATURE_V1, VerifierKey
from tracecore.merkle import HASH_SIZE
from tracecore.note import MAX_NOTE_BYTES, MAX_TREE_SIZE, NoteSignature

__all__ = [
    "ADD_CHECKPOINT_PATH",
    "MAX_PROOF_LINES",
    "MAX_REQUEST_BYTES",
    "SIZE_CONTENT_TYPE",
    "STATUS_MEANING",
    "AddCheckpointRequest",
    "WitnessConfig",
    "format_size",
    "parse_cosignature_lines",
    "parse_size",
    "parse_witnesses",
]

#: The path of the call under the witness's submission prefix.
ADD_CHECKPOINT_PATH: Final = "/add-checkpoint"
#: C2SP tlog-witness: the client MUST NOT send more than 63 consistency proof lines.
MAX_PROOF_LINES: Final = 63
#: Content type of the 409 response body (the witness's latest cosigned size).
SIZE_CONTENT_TYPE: Final = "text/x.tlog.size"
#: Largest request body: the old size line, 63 proof lines, the empty line, a note.
MAX_REQUEST_BYTES: Final = 32 + MAX_PROOF_LINES * 46 + 1 + MAX_NOTE_BYTES
#: What each status code of ``add-checkpoint`` means (C2SP tlog-witness).
STATUS_MEANING: Final[dict[int, str]] = {
    200: "cosigned: the body is the cosignature line(s)",
    400: "malformed request, or old size above the checkpoint size",
    403: "no signature of a trusted log key verifies",
    404: "unknown origin: the witness does not follow this log",
    409: "old size is not the witness's latest cosigned size (body: that size), or same size "
    "with another root hash",
    422: "the consistency proof does not verify",
}

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True, slots=True)
class AddCheckpointRequest:
    """An ``add-checkpoint`` request: old size, consistency proof, signed checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: str

    def __post_init__(self) -> None:
        if isinstance(self.old_size, bool) or not 0 <= self.old_size <= MAX_TREE_SIZE:
            raise MalformedNote(f"old size must be an integer in [0, {MAX_TREE_SIZE}]")
        if len(self.proof) > MAX_PROOF_LINES:
            raise MalformedNote(f"at most {MAX_PROOF_LINES} consistency proof lines")
        if any(len(h) != HASH_SIZE for h in self.proof):
            raise MalformedNote(f"every consistency proof hash is {HASH_SIZE} bytes")
        if not self.checkpoint.endswith("\n"):
            raise MalformedNote("the checkpoint note must end in a newline")

    def format(self) -> bytes:
        """Return the request body bytes (C2SP tlog-witness, "add-checkpoint")."""
        lines = [f"old {self.old_size}\n"]
        lines += [base64.b64encode(h).decode("ascii") + "\n" for h in self.proof]
        return ("".join(lines) + "\n" + self.checkpoint).encode("utf-8")

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpointRequest:
        """Parse a request body; raises :class:`MalformedNote` saying what is wrong.

        Only the framing is checked here; the checkpoint note itself is parsed and verified
        by the witness (it answers 403 and 404 for it, not 400).
        """
        if len(body) > MAX_REQUEST_BYTES:
            raise MalformedNote(f"the request body is at most {MAX_REQUEST_BYTES} bytes")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNote("the request body must be UTF-8") from exc
        head, blank, checkpoint = text.partition("\n\n")
        if not blank:
            raise MalformedNote("the request needs an empty line before the checkpoint")
        first, *proof_lines = head.split("\n")
        if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
            raise MalformedNote("the first line must be 'old <size>' (decimal, no leading zero)")
        if len(proof_lines) > MAX_PROOF_LINES:
            raise MalformedNote(f"at most {MAX_PROOF_LINES} consistency proof lines")
        proof = tuple(_hash(line) for line in proof_lines)
        return cls(int(first[4:]), proof, checkpoint)


def format_size(size: int) -> str:
    """Return the body of a 409 response: the size in decimal and a newline."""
    if isinstance(size, bool) or not 0 <= size <= MAX_TREE_SIZE:
        raise MalformedNote(f"a tree size is an integer in [0, {MAX_TREE_SIZE}]")
    return f"{size}\n"


def parse_size(body: bytes | str) -> int:
    """Parse the body of a 409 response (``text/x.tlog.size``); raises MalformedNote."""
    if isinstance(body, bytes):
        body = body.decode("ascii", errors="replace")
    if not body.endswith("\n") or not _DECIMAL.fullmatch(body[:-1]):
        raise MalformedNote("a tlog size body is a decimal without leading zeroes and a newline")
    size = int(body[:-1])
    if size > MAX_TREE_SIZE:
        raise MalformedNote(f"a tree size is at most {MAX_TREE_SIZE}")
    return size


def parse_cosignature_lines(body: bytes | str) -> tuple[str, ...]:
    """Parse the body of a 200 response into signature lines (without their newlines).

    C2SP tlog-witness: one or more note signature lines, each starting with U+2014 and ending
    in a newline. Raises :class:`MalformedNote` otherwise; checks form, not signatures.
    """
    if isinstance(body, bytes):
        if len(body) > MAX_NOTE_BYTES:
            raise MalformedNote(f"a cosignature response is at most {MAX_NOTE_BYTES} bytes")
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNote("a cosignature response must be UTF-8") from exc
    if not body.endswith("\n"):
        raise MalformedNote("a cosignature response is newline-terminated signature lines")
    lines: Sequence[str] = body[:-1].split("\n")
    return tuple(NoteSignature.parse_line(line).line for line in lines)


def _hash(line: str) -> bytes:
    """Decode one consistency proof line: canonical base64 of a 32-byte hash."""
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedNote("a consistency proof line is not valid base64") from exc
    if len(raw) != HASH_SIZE or base64.b64encode(raw).decode("ascii") != line:
        raise MalformedNote(f"a consistency proof line is the base64 of a {HASH_SIZE}-byte hash")
    return raw


@dataclass(frozen=True, slots=True)
class WitnessConfig:
    """A witness the log submits to: its submission URL prefix and its cosignature vkey."""

    url: str
    vkey: VerifierKey

    @property
    def name(self) -> str:
        """The witness's key name, as its cosignature lines carry it."""
        return self.vkey.name

    @property
    def endpoint(self) -> str:
        """The full ``add-checkpoint`` URL."""
        return self.url.rstrip("/") + ADD_CHECKPOINT_PATH


def parse_witnesses(text: str) -> list[WitnessConfig]:
    """Parse ``AGRITRACE_WITNESSES``: space-separated ``URL=vkey`` entries.

    Each URL is an ``http://`` or ``https://`` submission prefix; each vkey a C2SP vkey of type
    0x04 (a tlog-cosignature key, as ``agritrace witness`` prints it). Raises
    :class:`ConfigError` naming the bad entry.
    """
    witnesses: list[WitnessConfig] = []
    for entry in text.split():
        url, sep, vkey_text = entry.partition("=")
        if not sep or not url or not vkey_text:
            raise ConfigError(f"AGRITRACE_WITNESSES entry {entry!r} is not URL=vkey")
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigError(f"AGRITRACE_WITNESSES entry {entry!r}: bad URL: {exc}") from exc
        if parsed.scheme not in {"http", "https"} or not parsed.host:
            raise ConfigError(f"AGRITRACE_WITNESSES entry {entry!r}: URL must be http(s)://host")
        try:
            vkey = VerifierKey.parse(vkey_text)
        except KeyFileError as exc:
            raise ConfigError(f"AGRITRACE_WITNESSES entry {entry!r}: {exc}") from exc
        if vkey.alg != ALG_COSIGNATURE_V1:
            raise ConfigError(
                f"AGRITRACE_WITNESSES entry {entry!r}: the vkey must be a cosignature key "
                f"(type 0x04), not type 0x{vkey.alg:02x}"
            )
        if any(w.vkey.name == vkey.name for w in witnesses):
            raise ConfigError(f"AGRITRACE_WITNESSES names the witness {vkey.name!r} twice")
        witnesses.append(WitnessConfig(url, vkey))
    return witnesses
