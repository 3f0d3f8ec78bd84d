"""Bearer-token authentication and the rights of the registry API.

A request presents ``Authorization: Bearer <token>``. The token is either the admin token
(setting ``AGRITRACE_ADMIN_TOKEN``, compared in constant time; when unset nobody is admin) or a
party / inspector token issued by ``POST /v1/parties/{id}/tokens`` and stored hashed.
A missing, unknown, expired or revoked token is 401 with ``WWW-Authenticate: Bearer``; a valid
token without the right is 403. Every request looks its token up in the database (nothing is
cached), so a revocation or an expiry holds from the next request on (docs/registry-api.md).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from sqlalchemy import Engine

from traceapi.access import note_principal
from tracecore.settings import Settings
from tracecore.storage.engine import session_scope
from tracecore.storage.registry import lookup_token

__all__ = [
    "Principal",
    "authenticate",
    "forbidden",
    "is_admin_token",
    "require_admin",
    "require_admin_or_party",
]

Role = Literal["admin", "party", "inspector"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the admin, or a party / inspector token of ``party_id``.

    ``token_id`` is the id of a stored token (None for the admin token, which is a setting).
    """

    role: Role
    party_id: str | None = None
    token_id: int | None = None

    @property
    def is_admin(self) -> bool:
        """True for the admin token."""
        return self.role == "admin"

    def may_act_for(self, party_id: str) -> bool:
        """True if the caller is the admin or holds a party token of ``party_id``."""
        return self.is_admin or (self.role == "party" and self.party_id == party_id)


def _unauthorized(detail: str) -> HTTPException:
    """Return the 401 answer with the Bearer challenge."""
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def forbidden(detail: str = "this token does not allow this action") -> HTTPException:
    """Return the 403 answer for a valid token that lacks the right."""
    return HTTPException(status_code=status.HTTP_403_FORBIDDEN, detail=detail)


def _bearer(request: Request) -> str:
    """Return the bearer token of the request, or raise 401."""
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("missing bearer token")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("expected 'Authorization: Bearer <token>'")
    return token


def is_admin_token(settings: Settings, token: str) -> bool:
    """True if ``token`` equals the configured admin token (constant time); never if unset."""
    if settings.admin_token is None:
        return False
    admin = settings.admin_token.get_secret_value()
    if not admin:
        return False
    return hmac.compare_digest(token.encode("utf-8"), admin.encode("utf-8"))


def authenticate(request: Request) -> Principal:
    """Resolve the caller of a request from its bearer token; raise 401 if unknown."""
    token = _bearer(request)
    settings: Settings = request.app.state.settings
    if is_admin_token(settings, token):
        note_principal(request, "admin", "admin")
        return Principal(role="admin")
    engine: Engine = request.app.state.engine
    with session_scope(engine) as session:
        info = lookup_token(session, token)
    if info is None:
        raise _unauthorized("unknown token")
    refusal = info.refusal(request.app.state.clock())
    if refusal is not None:
        raise _unauthorized(refusal)
    if info.party_id is None:
        # Every issued token names its party; one that does not could not be on the trail.
        raise _unauthorized("a token without a party")
    role: Role = "inspector" if info.role == "inspector" else "party"
    note_principal(request, info.party_id, role)
    return Principal(role=role, party_id=info.party_id, token_id=info.id)


def require_admin(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Allow only the admin token."""
    if not principal.is_admin:
        raise forbidden("only the admin token may do this")
    return principal


def require_admin_or_party(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """Allow the admin and party tokens; the route then checks which party."""
    if principal.is_admin or principal.role == "party":
        return principal
    raise forbidden("only the admin or the owning party may do this")
