"""witness: an independent C2SP tlog-witness that cosigns the log's checkpoints.

A witness checks that every checkpoint it is shown is signed by the log and is an append-only
extension of the last checkpoint it cosigned for that log, and only then cosigns it
(c2sp.org/tlog-witness, c2sp.org/tlog-cosignature). It shares no code path and no database with
the log: its own key (``DATA_DIR/keys/<name>.key``), its own SQLite state file, and only the
HTTP protocol in between. See docs/witness.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tracecore.errors import KeyFileError
from tracecore.keys import SignerKey, VerifierKey, generate_signer, read_key_file, write_key_file
from witness.app import create_app
from witness.core import Refused, Witness, logs_by_origin
from witness.state import LogState, WitnessState

__all__ = [
    "LogState",
    "Refused",
    "Witness",
    "WitnessState",
    "create_app",
    "load_or_create_key",
    "logs_by_origin",
    "open_witness",
    "posix_seconds",
]


def posix_seconds() -> int:
    """Return the wall-clock POSIX time in seconds (the cosignature timestamp)."""
    return int(time.time())


def load_or_create_key(keys_dir: Path, name: str) -> tuple[SignerKey, bool]:
    """Return the witness key ``name`` from ``keys_dir``, creating it when missing.

    The second value tells whether the key was created now.
    """
    try:
        return read_key_file(keys_dir, name), False
    except KeyFileError:
        if (keys_dir / f"{name}.key").exists():
            raise  # present but unreadable or too open: never replace a witness key
    key = generate_signer(name)
    write_key_file(keys_dir, key)
    return key, True


def open_witness(
    keys_dir: Path,
    name: str,
    logs: Iterable[tuple[str, VerifierKey]],
    state_path: Path,
    clock: Callable[[], int] = posix_seconds,
) -> Witness:
    """Return a :class:`Witness` named ``name`` following ``logs`` (origin, log vkey pairs).

    The key is read from (or created in) ``keys_dir``; the state lives in ``state_path``.
    """
    key, _created = load_or_create_key(keys_dir, name)
    return Witness(key, logs_by_origin(logs), WitnessState(state_path), clock)
