"""The REST API server. For now it answers health checks; serving lands with its own issue."""

from __future__ import annotations

from fastapi import FastAPI

from core import __version__
from core.workspace import Workspace

app = FastAPI(title="ModelDeck API", version=__version__)


@app.get("/health")
def health() -> dict[str, str]:
    """Liveness: the server runs and knows its workspace (it never opens the store here)."""
    return {"status": "ok", "version": __version__, "workspace": str(Workspace.resolve().home)}
