"""Checkpoints of the log: integrate, sign (C2SP tlog-checkpoint), store, serve with cosignatures.

A checkpoint is the log's signed statement "my tree of ``size`` leaves has root ``root``": the
C2SP tlog-checkpoint text (origin line, size in decimal, base64 root hash; see
:class:`tracecore.note.CheckpointBody`) signed as a C2SP signed note with the log's Ed25519 key
(:func:`tracecore.note.sign_note`). One row per size in ``checkpoints``; witnesses' C2SP
tlog-cosignature/v1 lines are kept in ``cosignatures`` and appended when it is served
(:func:`served_note`).

:func:`make_checkpoint` is the integrator half of the log: it stores the Merkle nodes of the
leaves the sequencer appended (:func:`tracecore.storage.tree.integrate`) and only then signs,
so every signed size can be proved from stored hashes. Time is a parameter; the caller owns the
transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from tracecore.keys import SignerKey
from tracecore.note import CheckpointBody, append_signatures, sign_note
from tracecore.storage.index import IndexPlan, update_index
from tracecore.storage.models import Checkpoint
from tracecore.storage.rawsql import fetch_all, fetch_one
from tracecore.storage.tree import integrate, log_size, root_at

__all__ = ["checkpoint_text", "latest_checkpoint", "make_checkpoint", "served_note"]


def checkpoint_text(origin: str, size: int, root: bytes) -> str:
    """Return the C2SP tlog-checkpoint note text ``origin\\nsize\\nbase64(root)\\n``."""
    return CheckpointBody(origin, size, root).format()


_LATEST = "SELECT size, root, note, created_ms FROM checkpoints ORDER BY size DESC LIMIT 1"
_COSIGNATURES = "SELECT line FROM cosignatures WHERE checkpoint_size = ? ORDER BY witness"


def latest_checkpoint(session: Session) -> Checkpoint | None:
    """Return the checkpoint of the largest size (a detached row), or None before the first.

    Every scan asks this; it is read on the driver's cursor (:mod:`tracecore.storage.rawsql`).
    """
    row = fetch_one(session, _LATEST)
    if row is None:
        return None
    size, root, note, created_ms = row
    return Checkpoint(size=int(size), root=bytes(root), note=str(note), created_ms=int(created_ms))


def make_checkpoint(
    session: Session,
    origin: str,
    log_key: SignerKey,
    now_ms: int,
    *,
    index_interval_ms: int = 0,
    index_plan: IndexPlan | None = None,
) -> Checkpoint | None:
    """Integrate new leaves, update the product index and, if the log grew, sign a checkpoint.

    When entries were appended since the last index root and that root is at least
    ``index_interval_ms`` old, an ``index_root`` entry with the product index's new root is
    appended first (:func:`tracecore.storage.index.update_index`), and the checkpoint ends
    with it; its ``size`` says which entries the index covers (docs/log.md, "The product
    index"). Otherwise the checkpoint covers the whole log, and the entries after the last
    root wait for the next one. The leaves and the index are folded before the root takes the
    log's write lock: ingest waits only for the append and the signature.

    Returns the new :class:`Checkpoint` (flushed, committed with the caller's transaction), or
    None when the log has not grown since the latest checkpoint (or is empty). ``origin`` is
    the checkpoint origin line (``AGRITRACE_LOG_ORIGIN``), ``log_key`` the log's signer key.
    """
    integrate(session)
    appended = update_index(session, now_ms, min_interval_ms=index_interval_ms, plan=index_plan)
    # A root just appended holds the log's write lock, so it is the last entry; otherwise the
    # checkpoint signs what the log holds now (entries ingest commits meanwhile included).
    size = appended.index + 1 if appended is not None else log_size(session)
    latest = latest_checkpoint(session)
    if size == 0 or (latest is not None and size <= latest.size):
        return None
    integrate(session, size)
    root = root_at(session, size)
    note = sign_note(checkpoint_text(origin, size, root), [log_key])
    checkpoint = Checkpoint(size=size, root=root, note=note, created_ms=now_ms)
    session.add(checkpoint)
    session.flush()
    return checkpoint


def served_note(session: Session, checkpoint: Checkpoint) -> str:
    """Return the checkpoint's signed note with every stored witness cosignature appended.

    The log's own signature line comes first, then one tlog-cosignature/v1 line per witness in
    the order of the witness names (C2SP signed-note: verifiers ignore lines of unknown keys).
    """
    lines = [str(line) for (line,) in fetch_all(session, _COSIGNATURES, [checkpoint.size])]
    return append_signatures(checkpoint.note, lines) if lines else checkpoint.note
