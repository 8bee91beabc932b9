"""One error shape for the whole product.

Every error a user can cause is a ModelDeckError: a message saying what is wrong, a hint saying
how to fix it, and the HTTP status the API answers with. Pages, the CLI and the API all render
these the same way (message, then hint); anything else is a bug and shows as one.
"""

from __future__ import annotations


class ModelDeckError(Exception):
    """Base class: a user-facing problem with a message and a hint on how to fix it."""

    status: int = 400

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()

    def to_dict(self) -> dict[str, str | int]:
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class NotFound(ModelDeckError):
    status = 404

    def __init__(self, kind: str, ident: str, hint: str = "") -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"No {kind} '{ident}'.", hint or f"List the {kind}s to see valid ids.")


class InvalidInput(ModelDeckError):
    status = 422


class DatasetError(InvalidInput):
    """A dataset that cannot be read or cannot be trained on."""


class SchemaMismatch(InvalidInput):
    """Data that does not fit a model's input schema."""


class PipelineError(InvalidInput):
    """A pipeline block that is misconfigured or fails on its data; `block` names it."""

    def __init__(self, message: str, hint: str = "", block: str | None = None) -> None:
        super().__init__(message, hint)
        self.block = block


class Forbidden(ModelDeckError):
    status = 403


class Conflict(ModelDeckError):
    status = 409


class UntrustedArtifact(ModelDeckError):
    """A model file that may run code when loaded and has not been trusted by the user."""

    status = 403

    def __init__(self, message: str, hint: str = "", untrusted_types: list[str] | None = None):
        super().__init__(message, hint)
        self.untrusted_types = untrusted_types or []


class ArtifactError(ModelDeckError):
    """A model file that is not a model, is damaged, or no longer matches its recorded hash."""

    status = 422


class StoreBusy(ModelDeckError):
    """The metadata store stayed locked by another process for longer than we wait."""

    status = 503


class WorkerMissing(ModelDeckError):
    """A caller waits for a queued run and no worker is alive to execute it."""

    status = 503

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"No worker is running, so run {run_id} is still queued (no worker heartbeat in "
            "the workspace).",
            "Start one with `modeldeck worker` (or `make run`, which starts everything): the "
            "run starts as soon as it is up. `modeldeck runs show RUN` follows it.",
        )


class DamagedResults(ModelDeckError):
    """A run's results file exists but cannot be read (truncated, overwritten)."""

    status = 409

    def __init__(self, run_id: str, detail: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"The results file of run {run_id} is damaged ({detail}).",
            "Purge the run (its results are lost) or run it again.",
        )
