"""The witness's decision: check one ``add-checkpoint`` request and cosign it, or refuse it.

C2SP tlog-witness, "add-checkpoint", in the spec's order:

1. the body must frame an old size, at most 63 proof hashes, an empty line and a signed note
   (else **400**);
2. the checkpoint's origin must be a log this witness follows (else **404**);
3. a signature of one of that log's trusted keys must verify; signatures of unknown keys are
   ignored (else **403**);
4. the old size must not exceed the checkpoint size (else **400**);
5. the old size must be the size this witness last cosigned for the origin, 0 if none
   (else **409** with that size);
6. if the old size is the checkpoint size, the root hashes must be identical (else **409**: a
   fork at the same size); otherwise the consistency proof from the stored checkpoint to the new
   one must verify, RFC 9162 §2.1.4.2 (else **422**); a proof from size 0 must be empty;
7. the new state is stored with an atomic compare-and-set (:meth:`WitnessState.advance`); a
   request that lost a race gets the **409** the winner's size implies;
8. the answer is one tlog-cosignature/v1 line of the witness key, timestamped now.

A checkpoint with a valid log signature that contradicts the stored state (a fork at the same
size, a failing proof) is kept as evidence of log misbehaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from tracecore.errors import AgritraceError, NoteError, ProofError
from tracecore.keys import ALG_ED25519, SignerKey, VerifierKey
from tracecore.merkle import verify_consistency
from tracecore.note import CheckpointBody, cosign, cosigner_verifier, parse_note, verify_note
from tracecore.tlog_witness import AddCheckpointRequest
from witness.state import LogState, WitnessState

__all__ = ["Refused", "Witness", "logs_by_origin"]

_log = logging.getLogger(__name__)


class Refused(AgritraceError):
    """The witness refuses a request; ``status`` is the tlog-witness HTTP status code.

    For 409 because of the old size, ``known_size`` is the size the witness last cosigned.
    """

    def __init__(self, status: int, detail: str, known_size: int | None = None) -> None:
        """Record the status code, a human-readable reason and (for 409) the known size."""
        self.status = status
        self.detail = detail
        self.known_size = known_size
        super().__init__(f"{status}: {detail}")


def logs_by_origin(logs: Iterable[tuple[str, VerifierKey]]) -> dict[str, tuple[VerifierKey, ...]]:
    """Group ``(origin, log vkey)`` pairs into the trusted keys of each origin.

    A log may have several keys (during a key rotation). Only Ed25519 (type 0x01) log keys are
    accepted: a witness cosignature key is not a log key.
    """
    grouped: dict[str, list[VerifierKey]] = {}
    for origin, key in logs:
        if key.alg != ALG_ED25519:
            raise NoteError(f"log key {key.name} is not an Ed25519 (type 0x01) note key")
        CheckpointBody(origin, 0, bytes(32))  # the origin must be a valid origin line
        grouped.setdefault(origin, [])
        if key not in grouped[origin]:
            grouped[origin].append(key)
    return {origin: tuple(keys) for origin, keys in grouped.items()}


@dataclass(frozen=True, slots=True)
class Witness:
    """A C2SP tlog-witness: its key, the logs it follows and its state.

    ``clock`` returns the POSIX time in seconds used as the cosignature timestamp.
    """

    key: SignerKey
    logs: Mapping[str, Sequence[VerifierKey]]
    state: WitnessState
    clock: Callable[[], int]

    @property
    def vkey(self) -> VerifierKey:
        """The witness's cosignature vkey (type 0x04), what log clients put in their policy."""
        return cosigner_verifier(self.key)

    def add_checkpoint(self, body: bytes) -> list[str]:
        """Check an ``add-checkpoint`` request body; return the cosignature lines or raise.

        Raises :class:`Refused` with the tlog-witness status code (400, 403, 404, 409, 422).
        The lines have no final newline. Blocking (SQLite): run it in a worker thread.
        """
        try:
            request = AddCheckpointRequest.parse(body)
            note = parse_note(request.checkpoint)
            checkpoint = CheckpointBody.parse(note.text)
        except NoteError as exc:
            raise Refused(400, str(exc)) from exc
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            raise Refused(404, f"unknown origin {checkpoint.origin!r}")
        try:
            verify_note(note, keys)
        except NoteError as exc:
            raise Refused(403, f"the checkpoint's log signature does not verify: {exc}") from exc
        if request.old_size > checkpoint.size:
            raise Refused(
                400, f"old size {request.old_size} is above the checkpoint size {checkpoint.size}"
            )
        stored = self.state.latest(checkpoint.origin)
        new = LogState(checkpoint.size, checkpoint.root_hash)
        self._check_consistency(checkpoint.origin, request, stored, new, body)
        lost_to = self.state.advance(checkpoint.origin, stored, new, note.text, self.clock())
        if lost_to is not None:
            raise Refused(
                409,
                f"another request moved the witness to size {lost_to.size} meanwhile",
                lost_to.size,
            )
        _log.info("cosigned %s at size %d", checkpoint.origin, checkpoint.size)
        return [cosign(note.text, self.key, self.clock())]

    def _check_consistency(
        self,
        origin: str,
        request: AddCheckpointRequest,
        stored: LogState,
        new: LogState,
        body: bytes,
    ) -> None:
        """Steps 5 and 6: the old size is the stored one and the new tree extends it."""
        if request.old_size != stored.size:
            raise Refused(
                409,
                f"old size {request.old_size} is not the latest cosigned size {stored.size}",
                stored.size,
            )
        if new.size == stored.size:
            if request.proof:
                raise Refused(422, "a consistency proof to the same size must be empty")
            if new.root != stored.root:
                self._evidence(origin, "fork: same size, other root", body)
                raise Refused(409, f"fork: size {new.size} was cosigned with another root hash")
            return
        if stored.size == 0:
            if request.proof:
                raise Refused(422, "the consistency proof from size 0 must be empty")
            return
        try:
            verify_consistency(stored.size, new.size, stored.root, new.root, request.proof)
        except ProofError as exc:
            self._evidence(origin, f"bad consistency proof: {exc}", body)
            raise Refused(422, f"the consistency proof does not verify: {exc}") from exc

    def _evidence(self, origin: str, reason: str, body: bytes) -> None:
        _log.warning("log %s misbehaves? %s", origin, reason)
        self.state.record_evidence(origin, reason, body, self.clock())
