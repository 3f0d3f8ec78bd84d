"""Whose data a request shows: what the access trail records about an authenticated read.

A route that shows non-public data of particular parties names them with
:func:`note_parties`; the access trail (docs/inspection.md, "The access trail") records the
request with those parties, so that each of them can see who read its data.
"""

from __future__ import annotations

from fastapi import Request

__all__ = ["note_parties", "noted_parties"]


def note_parties(request: Request, *parties: str | None) -> None:
    """Record that ``request`` shows data of ``parties`` (``None`` is skipped)."""
    noted: set[str] = getattr(request.state, "access_parties", set())
    noted.update(p for p in parties if p is not None)
    request.state.access_parties = noted


def noted_parties(request: Request) -> frozenset[str]:
    """The parties whose data ``request`` showed, as noted so far."""
    return frozenset(getattr(request.state, "access_parties", ()))
