"""The console: pages for inspectors and the admin, behind a server-side session.

:func:`install` adds its routes and the answer to a request without a session (a redirect to
the sign-in page) to an app. Each section is a module with its own router: sign-in and home
(``routes``), the access trail (``access``), rejections and gaps (``rejections``), search and
exports (``search``), product dossiers and recalls (``dossier``); the producer console's devices,
complaints, credit and tokens (``devices``, ``complaints``, ``credit``, ``tokens``).
"""

from typing import Final

from fastapi import APIRouter, FastAPI

from traceapi.console import rejections
from traceapi.console.access import router as access_router
from traceapi.console.complaints import router as complaints_router
from traceapi.console.credit import router as credit_router
from traceapi.console.devices import router as devices_router
from traceapi.console.dossier import router as dossier_router
from traceapi.console.onboard import router as onboard_router
from traceapi.console.routes import router, sign_in_required
from traceapi.console.search import router as search_router
from traceapi.console.session import SignInRequired
from traceapi.console.tokens import router as tokens_router

__all__ = ["ROUTERS", "install"]

#: Every router of the console, in the order they are matched (search's ``/console/products``
#: before the dossier's ``/console/products/{key}``).
ROUTERS: Final[tuple[APIRouter, ...]] = (
    router,
    access_router,
    rejections.router,
    search_router,
    dossier_router,
    onboard_router,  # /console/devices/new before any /console/devices/{device} route
    devices_router,
    complaints_router,
    credit_router,
    tokens_router,
)


def install(app: FastAPI) -> None:
    """Serve the console on ``app`` under ``/console/``."""
    app.add_exception_handler(SignInRequired, sign_in_required)
    for console_router in ROUTERS:
        app.include_router(console_router)
