"""Log routes: the log's vkey, checkpoint, RFC 9162 proofs, entries and C2SP tlog-tiles.

Everything under ``/v1/log`` is what the latest signed checkpoint commits to, so a client can
verify every answer against it (docs/log.md):

* ``GET /v1/log/vkey``: the log's C2SP vkey (text/plain);
* ``GET /v1/log/policy``: a trust policy for ``agritrace verify`` (docs/bundle.md) with the log's
  vkey and the witnesses this server is configured with (text/plain);
* ``GET /v1/log/checkpoint``: the latest checkpoint, a C2SP signed note with the log's signature
  and the witnesses' tlog-cosignature/v1 lines (text/plain; 404 before the first one);
* ``GET /v1/log/proof/inclusion?index=&size=`` and ``GET /v1/log/proof/consistency?old=&new=``:
  RFC 9162 §2.1.3 / §2.1.4 proofs as ``{"hashes": [base64, ...]}``, for sizes up to the latest
  checkpoint's;
* ``GET /v1/log/entries/{index}``: one entry with its leaf hash and the raw COSE message;
* ``GET /v1/log/tile/<L>/<N>[.p/<W>]`` and ``GET /v1/log/tile/entries/<N>[.p/<W>]``: hash tiles
  and entry bundles of c2sp.org/tlog-tiles, only as far as the latest checkpoint reaches.

Malformed or out-of-range parameters are answered 400 with a message naming the parameter; a
tile beyond the checkpoint is 404 (it does not exist yet). The log's public key comes from
``create_app(log_vkey=...)`` or, when not given, from ``DATA_DIR/keys/log.key`` on first use
(only the public half is kept).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Annotated, Any, Final

import cbor2
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import Engine

from traceapi.openapi import errors
from traceapi.state import log_vkey, scan_policy
from tracecore import tiles
from tracecore.cbor import decode_strict
from tracecore.checkpoint import latest_checkpoint, served_note
from tracecore.cose import COSE_SIGN1_TAG, parse_cose
from tracecore.errors import AgritraceError, IdentifierError, NotFound
from tracecore.storage.engine import session_scope
from tracecore.storage.models import LogEntry
from tracecore.storage.tree import consistency_proof, entries, inclusion_proof, subtree_range

__all__ = ["EntryOut", "ProofOut", "router"]

#: C2SP tlog-tiles: full tiles and bundles never change.
IMMUTABLE: Final = "public, max-age=31536000, immutable"
#: Partial tiles are replaced by full ones and may be deleted then: cache them briefly.
SHORT_LIVED: Final = "public, max-age=60"
#: C2SP tlog-tiles: the checkpoint "SHOULD prevent caching beyond a few seconds".
CHECKPOINT_CACHE: Final = "no-cache"
TEXT: Final = "text/plain; charset=utf-8"
OCTETS: Final = "application/octet-stream"

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")

router = APIRouter(prefix="/v1/log", tags=["log"])


def _text(description: str) -> dict[str, Any]:
    """An answer of text/plain for the OpenAPI document."""
    return {"description": description, "content": {TEXT: {"schema": {"type": "string"}}}}


#: traceapi.state.log_vkey: without a log key the server cannot say which log it serves.
_NO_KEY: Final = "the log key is not configured on this server"
_BAD_PARAMETER: Final = "a parameter is missing, malformed or out of range; the detail names it"
_TILE: Final = {
    200: {
        "description": "the tile's bytes (hashes, or an entry bundle)",
        # OpenAPI 3.1 §4.8.14.3: raw binary content is a media type without a schema.
        "content": {OCTETS: {}},
    },
    **errors(
        {
            400: "a malformed tile path",
            404: "the tile is not part of the latest checkpoint (yet)",
        }
    ),
}


class ProofOut(BaseModel):
    """An RFC 9162 proof: the hashes in proof order, standard base64."""

    hashes: list[str]


class EntryOut(BaseModel):
    """One log entry: its bytes, leaf hash, raw COSE message, and both decoded for reading."""

    index: int
    kind: str
    entry: str
    leaf_hash: str
    received_ms: int
    raw: str | None
    decoded_entry: Any
    decoded_message: Any


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _bad_request(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_400_BAD_REQUEST, detail=detail)


def _uint(name: str, value: str | None) -> int:
    """Parse a required non-negative decimal query parameter, or answer 400 naming it."""
    if value is None:
        raise _bad_request(f"query parameter {name!r} is required")
    if not _DECIMAL.fullmatch(value):
        raise _bad_request(f"{name} must be a non-negative decimal integer, got {value!r}")
    return int(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _checkpoint_size(engine: Engine) -> int:
    """Return the size of the latest checkpoint (0 before the first one)."""
    with session_scope(engine) as session:
        latest = latest_checkpoint(session)
    return 0 if latest is None else latest.size


@router.get(
    "/vkey",
    response_class=Response,
    responses={200: _text("the vkey, one line"), **errors({404: _NO_KEY})},
)
def get_vkey(request: Request) -> Response:
    """The log's C2SP signed-note verifier key, one line of text/plain."""
    return Response(str(log_vkey(request)) + "\n", media_type=TEXT)


@router.get(
    "/policy",
    response_class=Response,
    responses={200: _text("the trust policy (docs/bundle.md)"), **errors({404: _NO_KEY})},
)
def get_policy(request: Request) -> Response:
    """A trust policy for ``agritrace verify``: the log's vkey, the witnesses, a quorum of all."""
    policy = scan_policy(request)
    lines = [
        "# The trust policy of this server (docs/bundle.md). It is only as trustworthy as the",
        "# place you got it from: compare each key with the one its owner publishes.",
        f"log {policy.log}",
        *(f"witness {name} {vkey}" for name, vkey in sorted(policy.witnesses.items())),
        f"quorum {len(policy.witnesses)}",
    ]
    return Response("\n".join(lines) + "\n", media_type=TEXT)


@router.get(
    "/checkpoint",
    response_class=Response,
    responses={
        200: _text("the checkpoint, a C2SP signed note"),
        **errors({404: "the log has no checkpoint yet"}),
    },
)
def get_checkpoint(request: Request) -> Response:
    """The latest checkpoint with its witness cosignatures (C2SP signed note, text/plain)."""
    with session_scope(_engine(request)) as session:
        latest = latest_checkpoint(session)
        if latest is None:
            raise NotFound("the log has no checkpoint yet")
        note = served_note(session, latest)
    return Response(note, media_type=TEXT, headers={"Cache-Control": CHECKPOINT_CACHE})


@router.get("/proof/inclusion", responses=errors({400: _BAD_PARAMETER}))
def get_inclusion_proof(
    request: Request,
    index: Annotated[str | None, Query()] = None,
    size: Annotated[str | None, Query()] = None,
) -> ProofOut:
    """RFC 9162 §2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
    leaf, tree_size = _uint("index", index), _uint("size", size)
    engine = _engine(request)
    checkpointed = _checkpoint_size(engine)
    if not 0 < tree_size <= checkpointed:
        raise _bad_request(
            f"size must be between 1 and the latest checkpoint size {checkpointed}, got {tree_size}"
        )
    if leaf >= tree_size:
        raise _bad_request(f"index must be below size {tree_size}, got {leaf}")
    with session_scope(engine) as session:
        hashes = inclusion_proof(session, leaf, tree_size)
    return ProofOut(hashes=[_b64(h) for h in hashes])


@router.get("/proof/consistency", responses=errors({400: _BAD_PARAMETER}))
def get_consistency_proof(
    request: Request,
    old: Annotated[str | None, Query()] = None,
    new: Annotated[str | None, Query()] = None,
) -> ProofOut:
    """RFC 9162 §2.1.4.1 consistency proof from tree size ``old`` to ``new``.

    ``0 < old <= new``; the proof is empty when ``old == new``.
    """
    first, second = _uint("old", old), _uint("new", new)
    engine = _engine(request)
    checkpointed = _checkpoint_size(engine)
    if second > checkpointed:
        raise _bad_request(
            f"new must be at most the latest checkpoint size {checkpointed}, got {second}"
        )
    if not 0 < first <= second:
        raise _bad_request(f"old must be between 1 and new ({second}), got {first}")
    with session_scope(engine) as session:
        hashes = consistency_proof(session, first, second)
    return ProofOut(hashes=[_b64(h) for h in hashes])


def _jsonable(value: object) -> Any:
    """Return a JSON form of a decoded CBOR value: byte strings as base64 text."""
    if isinstance(value, bytes):
        return _b64(value)
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": _jsonable(value.value)}
    return value


def _decoded(decode: Callable[[], object]) -> Any:
    """Return the JSON form of ``decode()``, or ``{"error": ...}`` for bytes that do not parse."""
    try:
        return _jsonable(decode())
    except AgritraceError as exc:
        return {"error": str(exc)}


def _decode_message(raw: bytes) -> object:
    message = parse_cose(raw)
    return {
        "tag": COSE_SIGN1_TAG,
        "kid": message.kid.hex(),
        "payload": decode_strict(message.payload, what="COSE payload"),
        "signature": message.signature,
    }


@router.get("/entries/{index}", responses=errors({400: _BAD_PARAMETER, 404: "no such log entry"}))
def get_entry(request: Request, index: str) -> EntryOut:
    """One log entry (within the latest checkpoint): bytes, leaf hash, raw COSE, decoded forms."""
    position = _uint("index", index)
    engine = _engine(request)
    checkpointed = _checkpoint_size(engine)
    if position >= checkpointed:
        raise _bad_request(
            f"index must be below the latest checkpoint size {checkpointed}, got {position}"
        )
    with session_scope(engine) as session:
        row = session.get(LogEntry, position)
        if row is None:
            raise NotFound(f"no log entry {position}")
    raw = row.raw
    return EntryOut(
        index=row.index,
        kind=row.kind,
        entry=_b64(row.entry),
        leaf_hash=_b64(row.leaf_hash),
        received_ms=row.received_ms,
        raw=None if raw is None else _b64(raw),
        decoded_entry=_decoded(lambda: decode_strict(row.entry, what="log entry")),
        decoded_message=None if raw is None else _decoded(lambda: _decode_message(raw)),
    )


def _tile(request: Request, level: str, rest: str) -> Response:
    """Serve a hash tile or entry bundle, if the latest checkpoint commits to all of it."""
    try:
        tile = tiles.parse_tile_path(level, rest)
    except IdentifierError as exc:
        raise _bad_request(f"malformed tile path: {exc}") from exc
    engine = _engine(request)
    checkpointed = _checkpoint_size(engine)
    if not tiles.available(tile, checkpointed):
        raise HTTPException(
            status_code=status.HTTP_404_NOT_FOUND,
            detail=f"{tile} is not part of the latest checkpoint (size {checkpointed})",
        )
    with session_scope(engine) as session:
        if tile.level is None:
            body = tiles.encode_entry_bundle(entries(session, tile.first, tile.first + tile.width))
        else:
            body = b"".join(
                subtree_range(session, tile.merkle_level, tile.first, tile.first + tile.width)
            )
    cache = SHORT_LIVED if tile.partial else IMMUTABLE
    return Response(body, media_type=OCTETS, headers={"Cache-Control": cache})


@router.get("/tile/entries/{rest:path}", response_class=Response, responses=_TILE)
def get_entry_bundle(request: Request, rest: str) -> Response:
    """C2SP tlog-tiles entry bundle ``tile/entries/<N>[.p/<W>]``."""
    return _tile(request, "entries", rest)


@router.get("/tile/{level}/{rest:path}", response_class=Response, responses=_TILE)
def get_hash_tile(request: Request, level: str, rest: str) -> Response:
    """C2SP tlog-tiles hash tile ``tile/<L>/<N>[.p/<W>]``."""
    return _tile(request, level, rest)
