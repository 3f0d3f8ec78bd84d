"""The log side of witnessing: submit each new checkpoint to the witnesses, keep cosignatures.

The checkpointer calls :func:`collect_cosignatures` for every checkpoint it signs. It speaks
only the C2SP tlog-witness HTTP protocol (ingest never imports the witness package):

* every configured witness (``AGRITRACE_WITNESSES``) gets ``POST <url>/add-checkpoint`` with
  the old size, a consistency proof from it and the signed checkpoint, all at once and each
  under its own deadline;
* a 409 answer carries the size the witness last cosigned (``text/x.tlog.size``): the request is
  made once more from that size, with a consistency proof from ``proof_fn``;
* every returned line is verified against the witness's configured cosignature vkey (type 0x04)
  before it is kept (C2SP tlog-witness: "the client MUST ignore any cosignatures from unknown
  keys");
* a witness that is down, slow, refusing or answering nonsense is logged and skipped: it never
  blocks nor fails ingestion. The checkpoint is simply served with fewer cosignatures.

:func:`store_cosignatures` writes the kept lines to the ``cosignatures`` table.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, select

from tracecore.errors import AgritraceError, NoteError
from tracecore.note import CheckpointBody, NoteSignature, parse_note, verify_cosignature
from tracecore.storage.engine import session_scope
from tracecore.storage.models import Checkpoint, Cosignature
from tracecore.storage.tree import consistency_proof
from tracecore.tlog_witness import (
    SIZE_CONTENT_TYPE,
    AddCheckpointRequest,
    WitnessConfig,
    parse_cosignature_lines,
    parse_size,
    parse_witnesses,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "CheckpointCosigner",
    "ProofFn",
    "WitnessConfig",
    "collect_cosignatures",
    "parse_witnesses",
    "store_cosignatures",
    "submit_checkpoint",
]

#: Deadline of one witness, all attempts included, in seconds.
DEFAULT_TIMEOUT_S = 5.0
#: ``proof_fn(old_size, new_size)``: the RFC 9162 consistency proof hashes between two sizes of
#: the log (sync or async). Only called with ``0 < old_size < new_size``.
ProofFn = Callable[[int, int], Sequence[bytes] | Awaitable[Sequence[bytes]]]

_log = logging.getLogger(__name__)


async def collect_cosignatures(
    checkpoint_note: str,
    old_size: int,
    proof_fn: ProofFn,
    witnesses: Sequence[WitnessConfig],
    http: httpx.AsyncClient,
    *,
    deadline_s: float = DEFAULT_TIMEOUT_S,
) -> list[str]:
    """Submit ``checkpoint_note`` to every witness at once; return the verified cosignatures.

    ``old_size`` is the size to submit from first (e.g. the previous checkpoint's size; 0 when
    unknown): a witness that answers 409 is asked again from the size it reports. Each witness
    has ``deadline_s`` seconds for all its attempts. Returns the signature lines (no final
    newline) that verify under the configured witness vkeys, in the order of ``witnesses``.
    Never raises for a witness's failure: it is logged and skipped.
    """
    body = CheckpointBody.parse(parse_note(checkpoint_note).text)
    results = await asyncio.gather(
        *(
            _submit_with_deadline(
                witness,
                checkpoint_note,
                body=body,
                old_size=old_size,
                proof_fn=proof_fn,
                http=http,
                deadline_s=deadline_s,
            )
            for witness in witnesses
        )
    )
    return [line for line in results if line is not None]


async def submit_checkpoint(
    witness: WitnessConfig,
    checkpoint_note: str,
    old_size: int,
    proof_fn: ProofFn,
    http: httpx.AsyncClient,
) -> str:
    """Submit to one witness (one retry after a 409) and return its verified cosignature line.

    Raises :class:`AgritraceError` (or :class:`httpx.HTTPError`) when the witness does not
    cosign; :func:`collect_cosignatures` turns that into a log line.
    """
    checkpoint_text = parse_note(checkpoint_note).text
    body = CheckpointBody.parse(checkpoint_text)
    size = old_size
    for attempt in range(2):
        proof = await _proof(proof_fn, size, body.size)
        request = AddCheckpointRequest(size, tuple(proof), checkpoint_note)
        response = await http.post(
            witness.endpoint,
            content=request.format(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
        if response.status_code == 200:
            return _verified_line(witness, checkpoint_text, response.content)
        if response.status_code == 409 and attempt == 0 and _is_size(response):
            known = parse_size(response.content)
            if known > body.size:
                raise _WitnessRefused(f"it has cosigned size {known}, beyond {body.size}")
            _log.info("witness %s knows size %d, resubmitting from it", witness.name, known)
            size = known
            continue
        reason = response.text.strip()[:200]
        raise _WitnessRefused(f"HTTP {response.status_code}: {reason}")
    raise _WitnessRefused("it kept answering 409")  # pragma: no cover (the loop returns)


def store_cosignatures(session: Session, size: int, lines: Iterable[str], now_ms: int) -> int:
    """Add the cosignature ``lines`` of the checkpoint of ``size`` to the session; return count.

    One row per witness (the key name of the line); a witness that already has a row for this
    checkpoint keeps it. The caller commits (the ``checkpoints`` row must exist: foreign key).
    """
    existing = set(
        session.exec(select(Cosignature.witness).where(Cosignature.checkpoint_size == size)).all()
    )
    added = 0
    for line in lines:
        name = NoteSignature.parse_line(line).name
        if name in existing:
            continue
        session.add(Cosignature(checkpoint_size=size, witness=name, line=line, received_ms=now_ms))
        existing.add(name)
        added += 1
    return added


class CheckpointCosigner:
    """The checkpointer's ``on_checkpoint``: have each new checkpoint cosigned, keep the lines.

    Submits from the size of the previous checkpoint it handled (0 at start: a witness that
    knows the log answers 409 with its size, and the request is made again from there), with
    consistency proofs read from the database, and stores every verified line in the
    ``cosignatures`` table. Never raises for a witness's failure (C2SP tlog-witness: a missing
    cosignature only means the checkpoint is served with fewer of them).
    """

    def __init__(
        self,
        engine: Engine,
        witnesses: Sequence[WitnessConfig],
        http: httpx.AsyncClient,
        clock: Callable[[], int],
        *,
        deadline_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Cosign through ``witnesses`` with ``http``; ``clock`` gives ms for ``received_ms``."""
        self._engine = engine
        self._witnesses = list(witnesses)
        self._http = http
        self._clock = clock
        self._deadline_s = deadline_s
        self._old_size = 0

    async def __call__(self, checkpoint: Checkpoint) -> None:
        """Collect and store the cosignatures of ``checkpoint``."""
        lines = await collect_cosignatures(
            checkpoint.note,
            self._old_size,
            self._proof,
            self._witnesses,
            self._http,
            deadline_s=self._deadline_s,
        )
        self._old_size = checkpoint.size
        if lines:
            await asyncio.to_thread(self._store, checkpoint.size, lines)
        _log.info(
            "checkpoint %d cosigned by %d of %d witnesses",
            checkpoint.size,
            len(lines),
            len(self._witnesses),
        )

    async def _proof(self, old: int, new: int) -> list[bytes]:
        return await asyncio.to_thread(self._read_proof, old, new)

    def _read_proof(self, old: int, new: int) -> list[bytes]:
        with session_scope(self._engine) as session:
            return consistency_proof(session, old, new)

    def _store(self, size: int, lines: list[str]) -> None:
        with session_scope(self._engine) as session:
            store_cosignatures(session, size, lines, self._clock())


class _WitnessRefused(AgritraceError):
    """A witness answered but did not cosign (internal: logged, never raised to callers)."""


async def _submit_with_deadline(
    witness: WitnessConfig,
    checkpoint_note: str,
    *,
    body: CheckpointBody,
    old_size: int,
    proof_fn: ProofFn,
    http: httpx.AsyncClient,
    deadline_s: float,
) -> str | None:
    """Run :func:`submit_checkpoint` within ``deadline_s``; log and return ``None`` on failure."""
    try:
        async with asyncio.timeout(deadline_s):
            return await submit_checkpoint(witness, checkpoint_note, old_size, proof_fn, http)
    except TimeoutError:
        _log.warning(
            "witness %s did not answer within %.1f s; %s at size %d goes on without it",
            witness.name,
            deadline_s,
            body.origin,
            body.size,
        )
    except (httpx.HTTPError, AgritraceError) as exc:
        _log.warning(
            "witness %s did not cosign %s at size %d: %s", witness.name, body.origin, body.size, exc
        )
    except Exception:  # noqa: BLE001 (a witness, or a proof for it, never fails ingestion)
        _log.exception(
            "submitting %s at size %d to %s failed", body.origin, body.size, witness.name
        )
    return None


async def _proof(proof_fn: ProofFn, old: int, new: int) -> list[bytes]:
    """Return the consistency proof from ``old`` to ``new`` (empty when there is none)."""
    if old == 0 or old >= new:
        return []
    result = proof_fn(old, new)
    if inspect.isawaitable(result):
        result = await result
    return list(result)


def _is_size(response: httpx.Response) -> bool:
    content_type = str(response.headers.get("content-type", ""))
    return content_type.split(";", maxsplit=1)[0].strip().lower() == SIZE_CONTENT_TYPE


def _verified_line(witness: WitnessConfig, checkpoint_text: str, content: bytes) -> str:
    """Return the response line by ``witness``'s key that verifies; ignore lines of others."""
    try:
        lines = parse_cosignature_lines(content)
    except NoteError as exc:
        raise _WitnessRefused(f"malformed cosignature response: {exc}") from exc
    for line in lines:
        if NoteSignature.parse_line(line).matches(witness.vkey):
            verify_cosignature(checkpoint_text, line, witness.vkey)
            return line
    raise _WitnessRefused("no cosignature by its configured key in the response")
