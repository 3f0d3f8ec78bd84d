"""Signature work beside the sequencer: device signatures checked, receipts signed.

Every accepted message costs one Ed25519 check and one receipt signature (docs/protocol.md §3,
§7). In the process that sequences and commits, that work would hold the interpreter for most of
its ~100 µs per message (PyNaCl releases the GIL only inside libsodium, and the calls around it
are Python), so a :class:`SignaturePool` runs it elsewhere:

* ``processes >= 1`` (the service's default, ``AGRITRACE_SIGNATURE_PROCESSES``): worker
  processes started with ``spawn`` (no fork of a process with threads and open connections).
  Each gets the log's signing key once, at start; a task carries only bytes and numbers, and
  answers with bytes. A worker that dies is replaced at the next task; the batch that was using
  it fails, rolls back and is retried by the service (nothing is committed without its checks).
* ``processes == 0``: threads in this process, as before (tests, tools, one-core machines).

The answers are the same either way: for a check, ``None`` or ``(reason, detail)`` as
:meth:`tracecore.cose.CoseSign1.verify` would raise it; for a receipt, the bytes
:func:`tracecore.receipt.sign_receipt` gives.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeAlias, TypeVar

import nacl.signing

from tracecore.cose import CoseSigner, verify_signature
from tracecore.errors import MessageRejected, RejectReason
from tracecore.receipt import Receipt, sign_receipt

__all__ = ["ReceiptTask", "SignaturePool", "Verdict", "VerifyTask"]

#: One check: kid, protected header, payload, signature (as carried), the device's public key.
VerifyTask: TypeAlias = tuple[bytes, bytes, bytes, bytes, bytes]
#: One receipt: device, seq, log index, entry hash, message hash, time (docs/protocol.md §7).
ReceiptTask: TypeAlias = tuple[str, int, int, bytes, bytes, int]
#: A check's answer: None for a good signature, else the rejection's reason and detail.
Verdict: TypeAlias = tuple[RejectReason, str] | None

_Task = TypeVar("_Task")
_Answer = TypeVar("_Answer")

# The log key's signer in a worker process, installed once by _start_worker.
_worker_signer: CoseSigner | None = None


def _start_worker(seed: bytes) -> None:
    """Worker process start: keep the log key; leave SIGINT/SIGTERM to the parent.

    The parent stops its workers through the pool at shutdown; a terminal's Ctrl-C or a
    container's SIGTERM to the whole process group must not kill them under a batch that is
    still committing (the workers also exit when the parent's end of their pipe closes).
    """
    global _worker_signer  # noqa: PLW0603  (one per worker process, set once)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _worker_signer = CoseSigner(nacl.signing.SigningKey(seed))


def _verify_many(tasks: list[VerifyTask]) -> list[Verdict]:
    """Check each signature; ``None`` for a good one."""
    verdicts: list[Verdict] = []
    for kid, protected, payload, signature, public_key in tasks:
        try:
            verify_signature(kid, protected, payload, signature, public_key)
        except MessageRejected as exc:  # BadSignature, or UnknownKey on a kid mismatch
            verdicts.append((exc.reason, exc.detail))
        else:
            verdicts.append(None)
    return verdicts


def _sign_many(tasks: list[ReceiptTask], signer: CoseSigner | None = None) -> list[bytes]:
    """Sign each receipt with ``signer`` (threads) or the worker's log key (processes)."""
    key = signer or _worker_signer
    if key is None:
        raise RuntimeError("no log key in this signature worker")
    return [sign_receipt(Receipt(*task), key) for task in tasks]


class SignaturePool:
    """Ed25519 checks and receipt signatures in worker processes or threads (module docstring)."""

    def __init__(
        self, signing_key: nacl.signing.SigningKey, *, processes: int = 0, threads: int = 2
    ) -> None:
        """Start the pool: ``processes`` worker processes, or ``threads`` threads if 0."""
        if processes < 0 or threads < 1:
            raise ValueError("processes >= 0 and threads >= 1 required")
        self.processes = processes
        self._threads = threads
        self._seed = bytes(signing_key)
        self._signer = CoseSigner(signing_key)
        self._executor = self._start()

    def _start(self) -> Executor:
        if self.processes == 0:
            return ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="ingest-sig")
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._seed,),
        )

    def verify(self, tasks: Sequence[VerifyTask]) -> Future[list[Verdict]]:
        """Check a chunk of signatures; the future holds one :data:`Verdict` per task."""
        return self._submit(_verify_many, list(tasks))

    def sign(self, receipts: Sequence[Receipt]) -> Future[list[bytes]]:
        """Sign a chunk of receipts with the log key; the future holds their COSE bytes."""
        tasks: list[ReceiptTask] = [
            (r.device, r.seq, r.index, r.entry, r.msg, r.time) for r in receipts
        ]
        if self.processes == 0:
            return self._executor.submit(_sign_many, tasks, self._signer)
        return self._submit(_sign_many, tasks)

    def _submit(
        self, function: Callable[[list[_Task]], list[_Answer]], tasks: list[_Task]
    ) -> Future[list[_Answer]]:
        try:
            return self._executor.submit(function, tasks)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): the batch that used it has failed and is
            # being retried; start a fresh pool for it rather than failing every batch after.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()
            return self._executor.submit(function, tasks)

    def close(self) -> None:
        """Stop the workers (waits for running tasks)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
