"""Signature work beside the sequencer: device signatures checked, receipts signed.

Every accepted message costs one Ed25519 check and one receipt signature (docs/protocol.md §3,
§7). In the process that sequences and commits, that work would hold the interpreter for most of
its ~100 µs per message (PyNaCl releases the GIL only inside libsodium, and the calls around it
are Python), so a :class:`SignaturePool` runs it elsewhere:

* ``processes >= 1`` (the service's default, ``AGRITRACE_SIGNATURE_PROCESSES``): worker
  processes started with ``spawn`` (no fork of a process with threads and open connections).
  Each gets the log's signing key once, at start, and then chunks of tasks down a pipe: a task
  carries only bytes and numbers, and the answer is bytes. A worker that dies fails its
  outstanding tasks with :class:`~tracecore.errors.WorkerDied` and is replaced at the next
  chunk; the batch that was using it rolls back and is retried by the service (nothing is
  committed without its checks).
* ``processes == 0``: threads in this process, as before (tests, tools, one-core machines).

The answers are the same either way: for a check, ``None`` or ``(reason, detail)`` as
:meth:`tracecore.cose.CoseSign1.verify` would raise it; for a receipt, the bytes
:func:`tracecore.receipt.sign_receipt` gives.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Final, TypeAlias

import nacl.signing

from tracecore.cose import CoseSigner, verify_signature
from tracecore.errors import MessageRejected, RejectReason, WorkerDied
from tracecore.receipt import Receipt, sign_receipt

__all__ = ["ReceiptTask", "SignaturePool", "Verdict", "VerifyTask"]

#: One check: kid, protected header, payload, signature (as carried), the device's public key.
VerifyTask: TypeAlias = tuple[bytes, bytes, bytes, bytes, bytes]
#: One receipt: device, seq, log index, entry hash, message hash, time (docs/protocol.md §7).
ReceiptTask: TypeAlias = tuple[str, int, int, bytes, bytes, int]
#: A check's answer: None for a good signature, else the rejection's reason and detail.
Verdict: TypeAlias = tuple[RejectReason, str] | None

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
        self._seed = bytes(signing_key)
        self._signer = CoseSigner(signing_key)
        self._threads = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ingest-sig")
            if processes == 0
            else None
        )
        self._workers = [_Worker(self._seed, n) for n in range(processes)]
        self._turn = itertools.cycle(range(processes)) if processes else None

    def verify(self, tasks: Sequence[VerifyTask]) -> Future[list[Verdict]]:
        """Check a chunk of signatures; the future holds one :data:`Verdict` per task."""
        if self._threads is not None:
            return self._threads.submit(_verify_many, list(tasks))
        return self._worker().submit(_VERIFY, list(tasks))

    def sign(self, receipts: Sequence[Receipt]) -> Future[list[bytes]]:
        """Sign a chunk of receipts with the log key; the future holds their COSE bytes."""
        tasks: list[ReceiptTask] = [
            (r.device, r.seq, r.index, r.entry, r.msg, r.time) for r in receipts
        ]
        if self._threads is not None:
            return self._threads.submit(_sign_many, tasks, self._signer)
        return self._worker().submit(_SIGN, tasks)

    def _worker(self) -> _Worker:
        assert self._turn is not None  # noqa: S101  (processes > 0 here)
        index = next(self._turn)
        worker = self._workers[index]
        if worker.broken:
            # A worker died (killed, out of memory): the tasks it had failed, and the batch
            # that used it is being retried. Start a fresh one rather than failing every batch.
            worker.close()
            worker = self._workers[index] = _Worker(self._seed, index)
        return worker

    def close(self) -> None:
        """Stop the workers (after the tasks they have)."""
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        for worker in self._workers:
            worker.close()


_VERIFY: Final = "verify"
_SIGN: Final = "sign"


def _serve(connection: Connection, seed: bytes) -> None:
    """A worker process: answer each chunk sent on ``connection``, in order, until it closes."""
    _start_worker(seed)
    handlers: dict[str, Callable[[Any], list[Any]]] = {_VERIFY: _verify_many, _SIGN: _sign_many}
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        if message is None:
            return  # the parent stops the pool
        kind, tasks = message
        connection.send(handlers[kind](tasks))


class _Worker:
    """One worker process, its pipe, and a thread that hands answers to their futures in order.

    The standard library's ProcessPoolExecutor costs more per task than the signatures it
    would carry here: a work item, a wake-up pipe write and a management thread per submit
    (docs/benchmarks.md, "Ingest at the speed of the machine"). A chunk goes down one pipe and
    its answer comes back on it; the worker answers chunks in the order they were sent.

    At most :data:`_IN_FLIGHT` chunks are in the pipe at a time; the rest wait here, receipt
    signatures before checks. A commit waits for its receipts while the checks of the next
    batch, prepared meanwhile, are already queued: sent in arrival order, the receipts waited
    for all of them (docs/benchmarks.md, "What bounds one worker"). Few chunks in flight also
    keep both directions of the pipe far below its buffer, so neither side blocks on a send.
    """

    def __init__(self, seed: bytes, number: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, seed), name=f"agritrace-signatures-{number}", daemon=True
        )
        self._process.start()
        child.close()
        # Futures of the chunks sent, in the order sent (the order of the answers).
        self._pending: collections.deque[Future[Any]] = collections.deque()
        # Chunks not sent yet, per kind: receipt signatures go first.
        self._waiting: dict[str, collections.deque[tuple[list[Any], Future[Any]]]] = {
            _SIGN: collections.deque(),
            _VERIFY: collections.deque(),
        }
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self.broken = False
        self._reader = threading.Thread(
            target=self._read, name=f"ingest-signatures-{number}", daemon=True
        )
        self._reader.start()

    def submit(self, kind: str, tasks: list[Any]) -> Future[Any]:
        """Queue a chunk; return the future of its answer."""
        future: Future[Any] = Future()
        with self._lock:
            if self.broken:
                future.set_exception(WorkerDied("the signature worker process has ended"))
                return future
            self._waiting[kind].append((tasks, future))
            self._send_waiting()
        return future

    def _send_waiting(self) -> None:
        """Send queued chunks, receipts first, while fewer than _IN_FLIGHT are out (lock held)."""
        while len(self._pending) < _IN_FLIGHT and not self.broken:
            kind = next((k for k in (_SIGN, _VERIFY) if self._waiting[k]), None)
            if kind is None:
                self._drained.notify_all()
                return
            tasks, future = self._waiting[kind].popleft()
            self._pending.append(future)
            try:
                self._connection.send((kind, tasks))
            except OSError as exc:
                self._fail(exc)

    def _read(self) -> None:
        while True:
            try:
                answer = self._connection.recv()
            except (EOFError, OSError) as exc:
                with self._lock:
                    self._fail(exc)
                return
            with self._lock:
                future = self._pending.popleft()
                self._send_waiting()
            future.set_result(answer)

    def _fail(self, cause: BaseException) -> None:
        """Fail every outstanding and queued task (called with the lock held)."""
        self.broken = True
        futures = list(self._pending) + [f for q in self._waiting.values() for _, f in q]
        self._pending.clear()
        for queue in self._waiting.values():
            queue.clear()
        for future in futures:
            future.set_exception(WorkerDied(f"the signature worker process has ended ({cause!r})"))
        self._drained.notify_all()

    def close(self) -> None:
        """Tell the worker to exit after its chunks; wait for it and the reader; close the pipe.

        (Closing the pipe first would not do: the reader thread blocked on it keeps it open.)
        """
        with self._lock:
            # The chunks still queued here go first (the reader sends them as answers come).
            self._drained.wait_for(
                lambda: self.broken or not any(self._waiting.values()), timeout=_STOP_S
            )
            with contextlib.suppress(OSError):
                self._connection.send(None)
        self._process.join(timeout=_STOP_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._reader.join(timeout=_STOP_S)
        self._connection.close()


#: Chunks in a worker's pipe at a time: one being worked on and one ready behind it.
_IN_FLIGHT: Final = 2

#: Longest wait for a worker to exit after its pipe is closed.
_STOP_S: Final = 10.0
