"""The audit log: who changed which deployment, when, from what to what."""

from __future__ import annotations

from typing import Any

from core.entities import AuditEntry
from core.store import Store, Tx, new_id, utcnow


def record(
    tx: Tx,
    *,
    actor: str,
    action: str,
    deployment_id: str | None,
    deployment_name: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
    subject: str = "",
) -> None:
    """Append one entry inside the caller's transaction, so it commits with the change.
    `subject` names what a non-deployment entry is about ('user bob', 'project Demo'). Every
    audited change touches the workspace's change marker after the commit (Workspace.changed)."""
    if tx.workspace is not None:
        tx.after_commit(tx.workspace.changed)
    tx.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            new_id("aud"),
            utcnow(),
            actor,
            action,
            deployment_id,
            deployment_name,
            before,
            after,
            reason,
            subject,
        ],
    )


def record_about(
    tx: Tx,
    subject: str,
    *,
    actor: str,
    action: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> None:
    """An entry about something other than a deployment ('user bob', 'project Demo')."""
    record(
        tx,
        actor=actor,
        action=action,
        deployment_id=None,
        deployment_name="",
        before=before,
        after=after,
        reason=reason,
        subject=subject,
    )


def list_entries(
    store: Store, deployment_name: str | None = None, *, subject: str | None = None
) -> list[AuditEntry]:
    """Entries, newest first, optionally of one deployment name (deleted ones included) or of
    one subject ('user bob')."""
    rows = store.query(
        "SELECT * FROM audit_log WHERE (? IS NULL OR deployment_name = ?)"
        " AND (? IS NULL OR subject = ?) ORDER BY logged_at DESC, id DESC",
        [deployment_name, deployment_name, subject, subject],
    )
    return [AuditEntry.from_row(r) for r in rows]


def deletion(store: Store, deployment_name: str) -> AuditEntry | None:
    """The entry that deleted the deployment of this name, when it is gone (else None)."""
    row = store.query(
        "SELECT * FROM audit_log WHERE deployment_name = ? AND action = 'delete'"
        " AND NOT EXISTS (SELECT 1 FROM deployments WHERE name = ?)"
        " ORDER BY logged_at DESC LIMIT 1",
        [deployment_name, deployment_name],
    ).first()
    return AuditEntry.from_row(row) if row else None


def describe(value: dict[str, Any] | None) -> str:
    """A short human reading of an entry's before/after, for tables ('' when absent)."""
    if not value:
        return ""
    if {"version", "main"} <= set(value):
        text = f"v{value['version']}: main {value['main']}"
        text += f", challenger {value['challenger']}" if value.get("challenger") else ""
        extra = {k: v for k, v in value.items() if k not in ("version", "main", "challenger")}
        return text + (f" ({describe(extra)})" if extra else "")
    return ", ".join(
        f"{k} {v}" if not isinstance(v, dict) else f"{k} [{describe(v)}]" for k, v in value.items()
    )
