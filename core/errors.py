"""One error shape for the whole product.

Every error a user can cause is a ModelDeckError: a message saying what is wrong, a hint saying
how to fix it, optionally the `Step` the hint points to, and the HTTP status the API answers
with. Pages, the CLI and the API all render these the same way (message, then hint); anything
else is a bug and shows as one.

Hints are front-end neutral: core never names a command, a flag, a page or a tab. Where the
fix is an action a front end offers, the error carries a Step and each front end adds its own
words for it (core/cli/output.py, core/ui/__init__.py, the API returns it as JSON).
"""

from __future__ import annotations

from dataclasses import dataclass

# The next steps a hint may point to; every front end has words for each (a test checks).
STEPS = (
    "list-deployments",
    "list-versions",
    "list-runs",
    "list-models",
    "list-datasets",
    "list-connections",
    "list-validations",
    "follow-run",
    "start-worker",
    "validate",
    "add-labels",
    "deploy-challenger",
    "set-schedule",
    "override-gate",
    "add-connection",
    "replace-connection",
    "allow-cleartext",
    "test-connection",
    "trust-pickle",
    "trust-type",
    "choose-label",
    "give-data",
)


@dataclass(frozen=True)
class Step:
    """An action a hint points to (one of STEPS) and what it acts on, when anything: a
    deployment's name, a run id, a project."""

    action: str
    subject: str = ""

    def __post_init__(self) -> None:
        if self.action not in STEPS:
            raise ValueError(f"unknown step {self.action!r}")

    def to_dict(self) -> dict[str, str]:
        return {"action": self.action, "subject": self.subject}


class ModelDeckError(Exception):
    """Base class: a user-facing problem with a message, a hint on how to fix it and, when
    the fix is an action a front end offers, that `step`."""

    status: int = 400

    def __init__(self, message: str, hint: str = "", *, step: Step | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.step = step

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
        }
        if self.step is not None:
            out["step"] = self.step.to_dict()
        return out


class NotFound(ModelDeckError):
    status = 404

    def __init__(self, kind: str, ident: str, hint: str = "", *, step: Step | None = None) -> None:
        self.kind = kind
        self.ident = ident
        list_step = f"list-{kind}s"
        if step is None and not hint and list_step in STEPS:
            step = Step(list_step)
        super().__init__(
            f"No {kind} '{ident}'.",
            hint or f"Choose an existing {kind}.",
            step=step,
        )


class InvalidInput(ModelDeckError):
    status = 422


class DatasetError(InvalidInput):
    """A dataset that cannot be read or cannot be trained on."""


class SchemaMismatch(InvalidInput):
    """Data that does not fit a model's input schema."""


class PipelineError(InvalidInput):
    """A pipeline block that is misconfigured or fails on its data; `block` names it."""

    def __init__(
        self, message: str, hint: str = "", block: str | None = None, *, step: Step | None = None
    ) -> None:
        super().__init__(message, hint, step=step)
        self.block = block


class Unauthorized(ModelDeckError):
    """Not logged in, a session that ended, or a login that failed."""

    status = 401


class TooManyAttempts(ModelDeckError):
    """Failed logins are slowed down: try again after `retry_after` seconds."""

    status = 429

    def __init__(self, message: str, hint: str = "", *, retry_after: float) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class Forbidden(ModelDeckError):
    """The acting user's role does not allow the action; the message names the role needed."""

    status = 403


class Conflict(ModelDeckError):
    status = 409


class UntrustedArtifact(ModelDeckError):
    """A model file that may run code when loaded and has not been trusted by the user."""

    status = 403

    def __init__(
        self,
        message: str,
        hint: str = "",
        untrusted_types: list[str] | None = None,
        *,
        step: Step | None = None,
    ):
        super().__init__(message, hint, step=step)
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
            "Start the worker: the run starts as soon as it is up.",
            step=Step("start-worker", run_id),
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
