"""The witness service: C2SP tlog-witness add-checkpoint, status codes, state, races."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from toylog import ORIGIN, ToyLog

from tracecore.errors import NoteError
from tracecore.keys import SignerKey, VerifierKey, read_key_file
from tracecore.merkle import EMPTY_ROOT
from tracecore.note import (
    CheckpointBody,
    append_signatures,
    cosigner_verifier,
    sign_note,
    verify_cosignature,
    verify_note,
)
from tracecore.tlog_witness import SIZE_CONTENT_TYPE, AddCheckpointRequest
from witness import LogState, Refused, Witness, WitnessState, create_app, open_witness

LOG_KEY = SignerKey("log", bytes(range(32)))
OTHER_KEY = SignerKey("log", bytes(range(1, 33)))  # same name, other key: an impostor
NOW = 1_750_000_000


@pytest.fixture
def log() -> ToyLog:
    """A log of 8 leaves signed by LOG_KEY."""
    return ToyLog(LOG_KEY, size=8)


@pytest.fixture
def witness(tmp_path: Path) -> Witness:
    """A witness following ORIGIN under LOG_KEY, with a fixed clock."""
    return open_witness(
        tmp_path / "keys",
        "w1",
        [(ORIGIN, LOG_KEY.verifier)],
        tmp_path / "w1.db",
        clock=lambda: NOW,
    )


@pytest.fixture
def client(witness: Witness) -> Iterator[_Client]:
    """A synchronous client of the witness app (ASGI, no network)."""
    with _Client(witness) as c:
        yield c


class _Client:
    """POSTs add-checkpoint bodies to an app through httpx's ASGI transport."""

    def __init__(self, witness: Witness) -> None:
        self.witness = witness
        self.app = create_app(witness)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def apost(self, body: bytes) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as http:
            return await http.post("/add-checkpoint", content=body)

    def post(self, body: bytes) -> httpx.Response:
        return asyncio.run(self.apost(body))

    def add(self, log: ToyLog, old: int, size: int, note: str | None = None) -> httpx.Response:
        proof = tuple(log.proof(old, size)) if 0 < old < size else ()
        note = note if note is not None else log.checkpoint(size)
        return self.post(AddCheckpointRequest(old, proof, note).format())


def _line_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text.endswith("\n")
    lines = response.text[:-1].split("\n")
    assert len(lines) == 1
    return lines[0]


# --- 200 ------------------------------------------------------------------------------------


def test_first_checkpoint_is_cosigned_and_verifies(client: _Client, log: ToyLog) -> None:
    """old 0 and no proof: the witness cosigns; the line verifies under its 0x04 vkey."""
    line = _line_of(client.add(log, 0, 8))
    vkey = client.witness.vkey
    assert line.startswith("\u2014 w1 ")
    assert verify_cosignature(log.body(8).format(), line, vkey) == NOW
    cosigned = append_signatures(log.checkpoint(8), [line])
    assert verify_note(cosigned, [LOG_KEY.verifier, vkey]) == ("log", "w1")


def test_growth_with_a_consistency_proof_is_cosigned(client: _Client, log: ToyLog) -> None:
    """From the stored size, a valid RFC 9162 proof to a larger size is accepted."""
    _line_of(client.add(log, 0, 3))
    log.grow(10)
    for old, new in [(3, 8), (8, 18), (18, 18)]:
        _line_of(client.add(log, old, new))
    assert client.witness.state.latest(ORIGIN) == LogState(18, log.root(18))


def test_extra_signatures_of_unknown_keys_are_ignored(client: _Client, log: ToyLog) -> None:
    """A checkpoint that also carries other signatures (e.g. cosignatures) is accepted."""
    note = sign_note(log.body(8).format(), [SignerKey("mirror", bytes(32)), LOG_KEY])
    _line_of(client.add(log, 0, 8, note))


def test_vkey_route(client: _Client) -> None:
    """GET /vkey returns the type 0x04 vkey that the CLI prints."""

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://w") as http:
            return await http.get("/vkey")

    text = asyncio.run(get()).text.strip()
    assert VerifierKey.parse(text) == cosigner_verifier(client.witness.key)
    assert VerifierKey.parse(text).alg == 0x04


# --- refusals -------------------------------------------------------------------------------


def test_404_unknown_origin(client: _Client) -> None:
    """A checkpoint of a log the witness does not follow: 404."""
    other = ToyLog(LOG_KEY, origin="elsewhere.example/log", size=4)
    response = client.add(other, 0, 4)
    assert response.status_code == 404
    assert "unknown origin" in response.text


def test_403_bad_log_signature(client: _Client, log: ToyLog) -> None:
    """Signed by an impostor key of the same name, or with a broken signature: 403."""
    assert client.add(log, 0, 8, log.checkpoint(8, signer=OTHER_KEY)).status_code == 403
    good = log.checkpoint(8)
    text, sig = good.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(sig))
    raw[20] ^= 1
    broken = f"{text} {base64.b64encode(raw).decode()}\n"
    response = client.add(log, 0, 8, broken)
    assert response.status_code == 403
    assert client.witness.state.latest(ORIGIN) == LogState.empty()


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"old 0\n",
        b"old 01\n\ncheckpoint\n",
        b"new 0\n\ncheckpoint\n",
        b"old 0\nnot-a-hash\n\nx\n",
        b"old 0\n\nnot a note\n",
        b"old 0\n\n\xff\xfe\n",
        b"old 0\n\nno\ncheckpoint\n\n\xe2\x80\x94 log AAAAAAA=\n",
    ],
)
def test_400_malformed(client: _Client, body: bytes) -> None:
    """Bodies that do not frame old size, proof, empty line and a checkpoint note: 400."""
    assert client.post(body).status_code == 400


def test_400_old_above_checkpoint_size(client: _Client, log: ToyLog) -> None:
    """old > checkpoint size: 400, even before the state is consulted."""
    response = client.post(AddCheckpointRequest(9, (), log.checkpoint(8)).format())
    assert response.status_code == 400
    assert "above the checkpoint size" in response.text


def test_409_old_size_mismatch_reports_the_known_size(client: _Client, log: ToyLog) -> None:
    """old ≠ latest cosigned size: 409, body "<size>\\n", Content-Type text/x.tlog.size."""
    _line_of(client.add(log, 0, 5))
    for old in (0, 3, 6):
        response = client.add(log, old, 8)
        assert response.status_code == 409
        assert response.headers["content-type"] == SIZE_CONTENT_TYPE
        assert response.content == b"5\n"


def test_422_bad_consistency_proof(client: _Client, log: ToyLog) -> None:
    """A proof that does not lead from the stored root to the new one: 422, kept as evidence."""
    _line_of(client.add(log, 0, 5))
    proof = log.proof(5, 8)
    bad = (proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:])
    response = client.post(AddCheckpointRequest(5, bad, log.checkpoint(8)).format())
    assert response.status_code == 422
    short = client.post(AddCheckpointRequest(5, tuple(proof[:-1]), log.checkpoint(8)).format())
    assert short.status_code == 422
    assert client.witness.state.latest(ORIGIN).size == 5
    reasons = [reason for reason, _ in client.witness.state.evidence(ORIGIN)]
    assert reasons[0].startswith("bad consistency proof")


def test_422_proof_from_size_zero_must_be_empty(client: _Client, log: ToyLog) -> None:
    """old 0 with proof lines: 422 (C2SP: the proof MUST be empty if the old size is zero)."""
    response = client.post(AddCheckpointRequest(0, (bytes(32),), log.checkpoint(8)).format())
    assert response.status_code == 422


def test_413_oversize_body(client: _Client) -> None:
    """A body larger than the protocol allows is refused before parsing."""
    assert client.post(b"old 0\n" + b"A" * 200_000).status_code == 413


# --- fork and rollback ----------------------------------------------------------------------


def test_fork_at_the_same_size_is_refused(client: _Client, log: ToyLog) -> None:
    """Same size, other root (a split view), signed by the log: 409, state kept, evidence."""
    _line_of(client.add(log, 0, 8))
    fork = ToyLog(LOG_KEY, size=8, salt="fork-")
    response = client.add(fork, 8, 8)
    assert response.status_code == 409
    assert "fork" in response.text
    assert client.witness.state.latest(ORIGIN) == LogState(8, log.root(8))
    assert client.witness.state.evidence(ORIGIN)[0][0].startswith("fork")


def test_fork_at_a_larger_size_is_refused(client: _Client, log: ToyLog) -> None:
    """A bigger tree that does not extend the cosigned one has no valid proof: 422."""
    _line_of(client.add(log, 0, 5))
    fork = ToyLog(LOG_KEY, size=8, salt="fork-")
    assert client.add(fork, 5, 8).status_code == 422


def test_rollback_is_refused(client: _Client, log: ToyLog) -> None:
    """A smaller checkpoint than the cosigned one: 409 from its own old size, 400 from ours."""
    _line_of(client.add(log, 0, 8))
    rollback = client.add(log, 3, 5)
    assert rollback.status_code == 409
    assert rollback.content == b"8\n"
    assert client.add(log, 8, 5).status_code == 400
    assert client.witness.state.latest(ORIGIN).size == 8


# --- persistence and concurrency --------------------------------------------------------------


def test_state_survives_a_restart(tmp_path: Path, log: ToyLog) -> None:
    """A new app on the same state file and key knows the cosigned size and the same key."""
    first = open_witness(tmp_path / "keys", "w1", [(ORIGIN, LOG_KEY.verifier)], tmp_path / "s.db")
    with _Client(first) as c:
        _line_of(c.add(log, 0, 5))
    second = open_witness(tmp_path / "keys", "w1", [(ORIGIN, LOG_KEY.verifier)], tmp_path / "s.db")
    assert second.key == first.key == read_key_file(tmp_path / "keys", "w1")
    with _Client(second) as c:
        assert c.add(log, 0, 8).content == b"5\n"
        _line_of(c.add(log, 5, 8))
    assert WitnessState(tmp_path / "s.db").latest(ORIGIN) == LogState(8, log.root(8))


def test_concurrent_requests_from_the_same_old_size_one_wins(tmp_path: Path) -> None:
    """Threads on separate state handles race from size 5 to different sizes: one wins."""
    log = ToyLog(LOG_KEY, size=16)
    logs = [(ORIGIN, LOG_KEY.verifier)]
    witnesses = [
        open_witness(tmp_path / "keys", "w1", logs, tmp_path / "race.db", clock=lambda: NOW)
        for _ in range(8)
    ]
    witnesses[0].add_checkpoint(AddCheckpointRequest(0, (), log.checkpoint(5)).format())
    barrier = threading.Barrier(len(witnesses))
    outcomes: list[int] = []
    lock = threading.Lock()

    def submit(witness: Witness, size: int) -> None:
        body = AddCheckpointRequest(5, tuple(log.proof(5, size)), log.checkpoint(size)).format()
        barrier.wait()
        try:
            witness.add_checkpoint(body)
            status = 200
        except Refused as exc:
            status = exc.status
        with lock:
            outcomes.append(status)

    threads = [threading.Thread(target=submit, args=(w, 9 + i)) for i, w in enumerate(witnesses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [200] + [409] * (len(witnesses) - 1)
    stored = WitnessState(tmp_path / "race.db").latest(ORIGIN)
    assert stored.size in range(9, 9 + len(witnesses))
    assert stored.root == log.root(stored.size)


def test_concurrent_http_requests_one_wins(client: _Client, log: ToyLog) -> None:
    """The same race through the HTTP app (asyncio.gather over the ASGI transport)."""
    log.grow(8)
    _line_of(client.add(log, 0, 4))

    async def race() -> list[httpx.Response]:
        bodies = [
            AddCheckpointRequest(4, tuple(log.proof(4, n)), log.checkpoint(n)).format()
            for n in range(8, 16)
        ]
        return list(await asyncio.gather(*(client.apost(body) for body in bodies)))

    statuses = sorted(r.status_code for r in asyncio.run(race()))
    assert statuses == [200] + [409] * 7


def test_compare_and_set_refuses_a_stale_expectation(tmp_path: Path) -> None:
    """advance() writes only when the stored state is still the expected one."""
    state = WitnessState(tmp_path / "cas.db")
    a, b = LogState(5, bytes([1]) * 32), LogState(7, bytes([2]) * 32)
    assert state.advance(ORIGIN, LogState.empty(), a, "n\n", NOW) is None
    assert state.advance(ORIGIN, LogState.empty(), b, "n\n", NOW) == a  # lost: stale
    assert state.advance(ORIGIN, a, b, "n\n", NOW) is None
    assert state.advance(ORIGIN, a, LogState(6, bytes(32)), "n\n", NOW) == b
    assert state.latest(ORIGIN) == b
    assert state.latest("other") == LogState(0, EMPTY_ROOT)


def test_a_log_key_must_be_an_ed25519_note_key(tmp_path: Path) -> None:
    """A cosignature (0x04) vkey is not accepted as a log key."""
    with pytest.raises(NoteError, match="type 0x01"):
        open_witness(tmp_path, "w", [(ORIGIN, cosigner_verifier(LOG_KEY))], tmp_path / "x.db")


def test_checkpoint_body_of_the_toy_log_is_valid(log: ToyLog) -> None:
    """Sanity: the toy log's checkpoints are C2SP checkpoints."""
    assert CheckpointBody.parse(log.body(8).format()).size == 8
