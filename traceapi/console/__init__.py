"""The console: pages for inspectors and the admin, behind a server-side session.

:func:`install` adds its routes and the answer to a request without a session (a redirect to
the sign-in page) to an app.
"""

from fastapi import FastAPI

from traceapi.console import rejections
from traceapi.console.access import router as access_router
from traceapi.console.dossier import router as dossier_router
from traceapi.console.routes import router, sign_in_required
from traceapi.console.search import router as search_router
from traceapi.console.session import SignInRequired

__all__ = ["install"]


def install(app: FastAPI) -> None:
    """Serve the console on ``app`` under ``/console/``."""
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.include_router(router)
    app.include_router(access_router)
    app.include_router(rejections.router)
    app.include_router(search_router)
    app.include_router(dossier_router)
