"""Requests to a running gateway through its state directory (``agritrace gateway rotate``).

A file is the simplest channel that works wherever the gateway runs (a service, a container, a
box without a network port for it): the command writes ``rotate.request`` into the state
directory atomically, and the running gateway takes it (deletes it) and acts on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

__all__ = ["ROTATE_REQUEST", "request_rotation", "take_rotation_request"]

#: The file that asks the running gateway to rotate its device key now.
ROTATE_REQUEST: Final = "rotate.request"


def request_rotation(state: Path) -> Path:
    """Ask the gateway whose state directory is ``state`` to rotate its key; return the file."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = state / ROTATE_REQUEST
    temporary = state / f".{ROTATE_REQUEST}.tmp"
    temporary.write_text("rotate the device key\n", encoding="utf-8")
    temporary.replace(target)  # atomic: the gateway sees the request whole or not at all
    return target


def take_rotation_request(state: Path) -> bool:
    """Return True (and remove the request) if a rotation was asked for."""
    try:
        (state / ROTATE_REQUEST).unlink()
    except FileNotFoundError:
        return False
    return True
