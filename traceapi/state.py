"""Facts of the running app that routes share: the log key, the trust policy, the scan salt.

Each is read once per app and kept on ``app.state``; nothing here is module-level state.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from fastapi import HTTPException, Request, status

from tracecore.bundle import Policy
from tracecore.errors import ConfigError, KeyFileError
from tracecore.keys import VerifierKey, read_log_key
from tracecore.settings import Settings
from tracecore.tlog_witness import parse_witnesses

__all__ = ["client_address", "log_vkey", "scan_policy", "scan_salt"]

_SALT_BYTES = 32


def log_vkey(request: Request) -> VerifierKey:
    """Return the log's vkey: the one given to create_app, else read from the key file once."""
    state = request.app.state
    vkey: VerifierKey | None = getattr(state, "log_vkey", None)
    if vkey is None:
        settings: Settings = state.settings
        try:
            vkey = read_log_key(settings.keys_dir, settings.log_origin).verifier
        except KeyFileError as exc:
            raise HTTPException(
                status_code=status.HTTP_404_NOT_FOUND,
                detail=f"the log key is not configured on this server: {exc}",
            ) from exc
        state.log_vkey = vkey  # keep only the public half
    return vkey


def scan_policy(request: Request) -> Policy:
    """The policy a scan verifies against: the log key and the configured witnesses.

    The quorum is 0: a witness that is down must not turn every page red. The checks still
    say how many trusted witnesses cosigned the checkpoint.
    """
    state = request.app.state
    policy: Policy | None = getattr(state, "scan_policy", None)
    if policy is None:
        settings: Settings = state.settings
        try:
            witnesses = {w.name: w.vkey for w in parse_witnesses(settings.witnesses)}
        except ConfigError:
            witnesses = {}  # ingest refuses to start with a bad list; the API still serves
        policy = Policy(log_vkey(request), witnesses, 0)
        state.scan_policy = policy
    return policy


def scan_salt(request: Request) -> bytes:
    """The secret that keys client hashes (``DATA_DIR/keys/scan.salt``, made on first use)."""
    state = request.app.state
    salt: bytes | None = getattr(state, "scan_salt", None)
    if salt is None:
        settings: Settings = state.settings
        salt = _load_or_create_salt(settings.keys_dir / "scan.salt")
        state.scan_salt = salt
    return salt


def _load_or_create_salt(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = secrets.token_bytes(_SALT_BYTES)
        try:
            # O_EXCL: two workers starting at once agree on one salt.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes()
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    return data


def client_address(request: Request) -> str:
    """The client's address: the socket's peer, or behind ``Settings.proxy_hops`` proxies the
    X-Forwarded-For entry the outermost proxy added.

    Each proxy appends the address it received the request from, so with N proxies the N-th
    entry from the right is the client as the outermost proxy saw it; everything left of it
    came from the client and can be anything (werkzeug ProxyFix ``x_for=N`` counts the same
    way). A header with fewer entries did not pass all the proxies: the peer is used then.
    """
    peer = request.client.host if request.client is not None else "unknown"
    settings: Settings = request.app.state.settings
    hops = settings.proxy_hops
    if hops == 0:
        return peer
    # RFC 9110 §5.3: several header lines are one comma-separated list, in order.
    entries = [
        entry.strip()
        for line in request.headers.getlist("x-forwarded-for")
        for entry in line.split(",")
    ]
    if len(entries) < hops or not entries[-hops]:
        return peer
    return entries[-hops]
