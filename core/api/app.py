"""The REST API server. For now it answers health checks; serving lands with its own issue.

Every error a caller can cause is a ModelDeckError, answered by one handler as the same JSON
(`ModelDeckError.to_dict`: error, message, hint and, when the fix is an action, its step)
with the error's HTTP status.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core import __version__
from core.errors import ModelDeckError
from core.workspace import Workspace


def error_response(_: Request, exc: Exception) -> JSONResponse:
    """A ModelDeckError as the API's one error shape."""
    if not isinstance(exc, ModelDeckError):  # registered for ModelDeckError only
        raise exc
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def create_app() -> FastAPI:
    """The API application, with its routes and its error handler."""
    api = FastAPI(title="ModelDeck API", version=__version__)
    api.add_exception_handler(ModelDeckError, error_response)

    @api.get("/health")
    def health() -> dict[str, str]:
        """Liveness: the server runs and knows its workspace (it never opens the store here)."""
        return {"status": "ok", "version": __version__, "workspace": str(Workspace.resolve().home)}

    return api


app = create_app()
