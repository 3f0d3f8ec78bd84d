"""The log side of witnessing (ingest.witnessing): submission, retries, dead witnesses, storage."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine
from sqlmodel import Session, select
from toylog import ORIGIN, ToyLog

from ingest.witnessing import (
    WitnessConfig,
    collect_cosignatures,
    parse_witnesses,
    store_cosignatures,
)
from tracecore.errors import ConfigError
from tracecore.keys import SignerKey
from tracecore.note import append_signatures, cosign, cosigner_verifier, verify_note
from tracecore.storage.models import Checkpoint, Cosignature
from witness import Witness, create_app, open_witness

LOG_KEY = SignerKey("log", bytes(range(32)))


def _witness(tmp_path: Path, name: str) -> Witness:
    return open_witness(tmp_path / "keys", name, [(ORIGIN, LOG_KEY.verifier)], tmp_path / name)


@contextmanager
def _serve(witness: Witness) -> Iterator[str]:
    """Run the witness app with uvicorn on a free loopback port; yield its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(witness), log_level="warning", lifespan="off", ws="none", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _config(url: str, witness: Witness) -> WitnessConfig:
    return WitnessConfig(url, witness.vkey)


def _collect(
    note: str,
    old: int,
    log: ToyLog,
    witnesses: Sequence[WitnessConfig],
    *,
    deadline_s: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
    calls: list[tuple[int, int]] | None = None,
) -> list[str]:
    def proof(a: int, b: int) -> list[bytes]:
        if calls is not None:
            calls.append((a, b))
        return log.proof(a, b)

    async def run() -> list[str]:
        async with httpx.AsyncClient(transport=transport) as http:
            return await collect_cosignatures(
                note, old, proof, witnesses, http, deadline_s=deadline_s
            )

    return asyncio.run(run())


def test_a_live_witness_cosigns(tmp_path: Path) -> None:
    """Two live witnesses (uvicorn on loopback) both cosign; the note verifies with both."""
    log = ToyLog(LOG_KEY, size=8)
    w1, w2 = _witness(tmp_path, "w1"), _witness(tmp_path, "w2")
    with _serve(w1) as url1, _serve(w2) as url2:
        configs = [_config(url1, w1), _config(url2, w2)]
        lines = _collect(log.checkpoint(), 0, log, configs)
        assert [line.split(" ")[1] for line in lines] == ["w1", "w2"]
        cosigned = append_signatures(log.checkpoint(), lines)
        assert verify_note(cosigned, [w1.vkey, w2.vkey]) == ("w1", "w2")
        log.grow(5)
        calls: list[tuple[int, int]] = []
        assert len(_collect(log.checkpoint(), 8, log, configs, calls=calls)) == 2
        assert calls == [(8, 13), (8, 13)]


def test_a_dead_witness_is_skipped_quickly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed port fails at once; the live witness's cosignature is still collected."""
    log = ToyLog(LOG_KEY, size=8)
    live = _witness(tmp_path, "live")
    dead = _witness(tmp_path, "dead")
    with _serve(live) as url, caplog.at_level(logging.WARNING, logger="ingest.witnessing"):
        started = time.monotonic()
        lines = _collect(
            log.checkpoint(),
            0,
            log,
            [_config(f"http://127.0.0.1:{_closed_port()}", dead), _config(url, live)],
        )
        assert time.monotonic() - started < 2.0
    assert [line.split(" ")[1] for line in lines] == ["live"]
    assert "witness dead did not cosign" in caplog.text


def test_a_silent_witness_is_cut_off_at_its_deadline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A witness that accepts the connection but never answers costs at most the deadline."""
    log = ToyLog(LOG_KEY, size=8)
    silent = _witness(tmp_path, "silent")
    with socket.socket() as sock, caplog.at_level(logging.WARNING, logger="ingest.witnessing"):
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = time.monotonic()
        lines = _collect(log.checkpoint(), 0, log, [_config(url, silent)], deadline_s=0.3)
        elapsed = time.monotonic() - started
    assert lines == []
    assert elapsed < 2.0
    assert "did not answer within 0.3 s" in caplog.text


def test_409_is_retried_from_the_size_the_witness_reports(tmp_path: Path) -> None:
    """The witness has cosigned size 5; the log submits from 0, gets 409 "5", proves 5 → 8."""
    log = ToyLog(LOG_KEY, size=8)
    witness = _witness(tmp_path, "w1")
    with _serve(witness) as url:
        config = [_config(url, witness)]
        assert len(_collect(log.checkpoint(5), 0, log, config)) == 1
        calls: list[tuple[int, int]] = []
        lines = _collect(log.checkpoint(8), 0, log, config, calls=calls)
        assert calls == [(5, 8)]
        assert len(lines) == 1
        # The same checkpoint again (e.g. a second ingest worker): 409 "8", then old 8 = size 8.
        assert len(_collect(log.checkpoint(8), 5, log, config)) == 1


def test_a_witness_ahead_of_the_checkpoint_is_skipped(tmp_path: Path) -> None:
    """A witness that reports a larger size than the checkpoint cannot cosign it: skipped."""
    log = ToyLog(LOG_KEY, size=8)
    witness = _witness(tmp_path, "w1")
    with _serve(witness) as url:
        config = [_config(url, witness)]
        assert len(_collect(log.checkpoint(8), 0, log, config)) == 1
        assert _collect(log.checkpoint(5), 0, log, config) == []


def test_an_async_proof_function_is_awaited(tmp_path: Path) -> None:
    """proof_fn may be a coroutine function (e.g. reading the database asynchronously)."""
    log = ToyLog(LOG_KEY, size=8)
    witness = _witness(tmp_path, "w1")
    calls: list[tuple[int, int]] = []

    async def proof(a: int, b: int) -> list[bytes]:
        calls.append((a, b))
        await asyncio.sleep(0)
        return log.proof(a, b)

    async def run() -> list[str]:
        transport = httpx.ASGITransport(app=create_app(witness))
        async with httpx.AsyncClient(transport=transport) as http:
            config = [WitnessConfig("http://w1", witness.vkey)]
            await collect_cosignatures(log.checkpoint(3), 0, proof, config, http)
            return await collect_cosignatures(log.checkpoint(8), 3, proof, config, http)

    assert len(asyncio.run(run())) == 1
    assert calls == [(3, 8)]


@pytest.mark.parametrize(
    "answer",
    [
        "garbage",
        "\u2014 w1 AAAAAAA=\n",  # malformed cosignature bytes under the right name? other id
        "",
    ],
)
def test_answers_without_a_valid_cosignature_are_skipped(tmp_path: Path, answer: str) -> None:
    """200 with garbage, or lines by other keys, or an empty body: nothing is kept."""
    log = ToyLog(LOG_KEY, size=8)
    witness = _witness(tmp_path, "w1")
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, text=answer))
    config = [WitnessConfig("http://w1", witness.vkey)]
    assert _collect(log.checkpoint(), 0, log, config, transport=transport) == []


def test_a_forged_cosignature_is_not_kept(tmp_path: Path) -> None:
    """A line under the witness's name and key id that does not verify is dropped."""
    log = ToyLog(LOG_KEY, size=8)
    witness = _witness(tmp_path, "w1")
    good = cosign(log.body(8).format(), witness.key, 1000)
    other_time = cosign(log.body(7).format(), witness.key, 1000)  # valid, wrong checkpoint
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, text=other_time + "\n"))
    config = [WitnessConfig("http://w1", witness.vkey)]
    assert _collect(log.checkpoint(), 0, log, config, transport=transport) == []
    transport = httpx.MockTransport(
        lambda _request: httpx.Response(200, text=f"{other_time}\n{good}\n")
    )
    assert _collect(log.checkpoint(), 0, log, config, transport=transport) == []


def test_only_the_configured_witness_key_is_kept(tmp_path: Path) -> None:
    """Lines of other keys in a response are ignored; the configured key's line is kept."""
    log = ToyLog(LOG_KEY, size=8)
    witness = _witness(tmp_path, "w1")
    stranger = SignerKey("stranger", bytes(32))
    body = (
        cosign(log.body(8).format(), stranger, 5)
        + "\n"
        + cosign(log.body(8).format(), witness.key, 5)
    )
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, text=body + "\n"))
    config = [WitnessConfig("http://w1", witness.vkey)]
    lines = _collect(log.checkpoint(), 0, log, config, transport=transport)
    assert [line.split(" ")[1] for line in lines] == ["w1"]


# --- configuration --------------------------------------------------------------------------


def test_parse_witnesses() -> None:
    """AGRITRACE_WITNESSES: space-separated URL=vkey entries with type 0x04 vkeys."""
    a = cosigner_verifier(SignerKey("wa", bytes(32)))
    b = cosigner_verifier(SignerKey("wb", bytes(range(32))))
    text = f" http://127.0.0.1:8100={a}\n https://witness.example/prefix/={b} "
    configs = parse_witnesses(text)
    assert [(c.url, c.vkey) for c in configs] == [
        ("http://127.0.0.1:8100", a),
        ("https://witness.example/prefix/", b),
    ]
    assert configs[1].endpoint == "https://witness.example/prefix/add-checkpoint"
    assert parse_witnesses("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://127.0.0.1:8100", "URL=vkey"),
        ("=wa+00000000+AAAA", "URL=vkey"),
        ("ftp://host={a}", "http"),
        ("http://host=wa+00000000+AAAA", "wa"),
        ("http://host={log}", "type 0x04"),
        ("http://a={a} http://b={a}", "twice"),
    ],
)
def test_bad_witness_entries_raise_config_errors(text: str, message: str) -> None:
    """Each bad entry is refused with a ConfigError naming it."""
    a = cosigner_verifier(SignerKey("wa", bytes(32)))
    with pytest.raises(ConfigError, match=message):
        parse_witnesses(text.format(a=a, log=LOG_KEY.verifier))


# --- storage ----------------------------------------------------------------------------------


def test_store_cosignatures(engine: Engine, tmp_path: Path) -> None:
    """Lines go to the cosignatures table, one per witness; repeats are skipped."""
    log = ToyLog(LOG_KEY, size=8)
    w1, w2 = _witness(tmp_path, "w1"), _witness(tmp_path, "w2")
    lines = [cosign(log.body(8).format(), w.key, 100) for w in (w1, w2)]
    with Session(engine) as session:
        session.add(Checkpoint(size=8, root=log.root(8), note=log.checkpoint(), created_ms=1))
        session.commit()
        assert store_cosignatures(session, 8, lines, 1234) == 2
        session.commit()
        assert store_cosignatures(session, 8, lines[:1], 5678) == 0
        session.commit()
        rows = session.exec(select(Cosignature).order_by(Cosignature.witness)).all()
    assert [(r.checkpoint_size, r.witness, r.line, r.received_ms) for r in rows] == [
        (8, "w1", lines[0], 1234),
        (8, "w2", lines[1], 1234),
    ]
