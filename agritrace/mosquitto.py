"""Broker credentials and ACL for mosquitto: each gateway may publish only as its own devices.

A device gateway (one MQTT connection: the firmware of a farm, a truck, a plant; the simulator's
``Fleet`` of one party) logs in as ``gw-{party}`` with its own password, and mosquitto's ACL
lets it write only ``agritrace/v1/devices/{device}/up`` and read only
``.../{device}/receipt`` for the devices it hosts. Ingest logs in as ``agritrace-ingest`` and may
read every ``up`` topic and write every ``receipt``. A stolen gateway password therefore cannot
publish under another device's topic; a signature check still guards every message, and the
ACL keeps forged traffic off the broker in the first place (design.md: topic_mismatch).

The password file uses mosquitto 2's PBKDF2-SHA512 form (``$7$iterations$salt$hash``, base64),
which ``mosquitto_passwd`` writes too. Passwords are random and stored one file per user (mode
0600) so that each service reads only its own.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

from tracecore.topics import RECEIPT_SUFFIX, TOPIC_PREFIX, UP_WILDCARD, receipt_topic, up_topic

__all__ = [
    "INGEST_USER",
    "acl_text",
    "gateway_user",
    "password_line",
    "write_broker_auth",
]

INGEST_USER: Final = "agritrace-ingest"
# mosquitto 2's defaults for "$7$" (src/password_mosq.c: 101 iterations, 12-byte salt).
_ITERATIONS: Final = 101
_SALT_BYTES: Final = 12


def gateway_user(party: str) -> str:
    """The MQTT user name of ``party``'s gateway."""
    return f"gw-{party}"


def password_line(user: str, password: str, salt: bytes | None = None) -> str:
    """One line of a mosquitto password file: ``user:$7$101$salt$hash`` (PBKDF2-SHA512)."""
    if ":" in user or "\n" in user:
        raise ValueError(f"not a usable MQTT user name: {user!r}")
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, _ITERATIONS)
    encoded = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{user}:$7${_ITERATIONS}${encoded[0]}${encoded[1]}"


def acl_text(gateways: Mapping[str, Iterable[str]]) -> str:
    """The mosquitto ACL: ingest reads every up topic and writes receipts; each gateway user
    (``gateways``: user → its device ids) writes its devices' up topics and reads their
    receipts, nothing else. Without a rule, mosquitto denies."""
    lines = [
        f"user {INGEST_USER}",
        f"topic read {UP_WILDCARD}",
        f"topic write {TOPIC_PREFIX}/+/{RECEIPT_SUFFIX}",
        # For health checks: is the broker up and does it take ingest's password?
        "topic read $SYS/broker/uptime",
        "",
    ]
    for user in sorted(gateways):
        lines.append(f"user {user}")
        for device in sorted(gateways[user]):
            lines.append(f"topic write {up_topic(device)}")
            lines.append(f"topic read {receipt_topic(device)}")
        lines.append("")
    return "\n".join(lines)


def write_broker_auth(
    directory: Path, parties: Mapping[str, Iterable[str]], *, per_device: bool = False
) -> dict[str, str]:
    """Write ``passwd``, ``acl`` and ``passwords/{user}`` for the gateways of ``parties``
    (party → device ids) and for ingest, into ``directory``.

    With ``per_device`` every device is a user of its own (named by its id) that may use only
    its own topics: for devices that each hold their own connection instead of sharing their
    party's gateway. A user whose password file exists keeps its password (a rerun adds users,
    it does not lock out the running ones). Returns user → password.
    """
    secrets_dir = directory / "passwords"
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if per_device:
        gateways = {device: [device] for devices in parties.values() for device in devices}
    else:
        gateways = {gateway_user(party): list(devices) for party, devices in parties.items()}
    passwords: dict[str, str] = {}
    for user in [INGEST_USER, *sorted(gateways)]:
        path = secrets_dir / user
        if path.exists():
            passwords[user] = path.read_text().strip()
            continue
        passwords[user] = secrets.token_urlsafe(24)
        _write_private(path, passwords[user] + "\n")
    _write_private(
        directory / "passwd", "".join(password_line(u, p) + "\n" for u, p in passwords.items())
    )
    (directory / "acl").write_text(acl_text(gateways))
    return passwords


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
