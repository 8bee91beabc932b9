"""API keys: a user's bearer secrets for the REST API, shown once, stored as a keyed hash.

A key is `mdk_` + 256 random bits in base62 (43 characters) + a 6-character CRC32 checksum of
them, as GitHub's tokens carry one: a scanner (or `well_formed`) tells a key from noise offline,
and a typo is refused without a lookup. The store keeps only HMAC-SHA256(key) under the
workspace's secret file beside the store: a fast keyed hash, since a slow KDF per request would
cap a core at a few dozen checks a second and adds nothing for a 256-bit secret; without the
secret file a stolen store cannot even test guesses.

Keys belong to users; anyone active may create keys for themselves, optionally limited to one
deployment. The owner of a key or an admin revokes it. Every change is audited (`user <name>`).
The API authenticates against a `KeyRing` read from the store in one go and refreshed in the
background (it never opens the store on a request).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core import access, audit
from core.entities import ApiKey
from core.errors import InvalidInput, NotFound, Unauthorized
from core.store import Store, Tx, new_id, utcnow
from core.workspace import Workspace

PREFIX = "mdk_"
BODY = 43  # base62 digits of 256 bits
CHECK = 6  # base62 digits of a CRC32
SHOWN = len(PREFIX) + 6  # how much of a key lists show
SECRET_SUFFIX = "api-secret"
_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _base62(number: int, width: int) -> str:
    out = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        out.append(_DIGITS[digit])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CHECK)


def generate() -> str:
    """A new key (never stored as such)."""
    body = _base62(secrets.randbits(256), BODY)
    return f"{PREFIX}{body}{_checksum(body)}"


def well_formed(key: str) -> bool:
    """Whether `key` has a key's shape and a matching checksum (no lookup)."""
    if len(key) != len(PREFIX) + BODY + CHECK or not key.startswith(PREFIX):
        return False
    body, check = key[len(PREFIX) : -CHECK], key[-CHECK:]
    return all(c in _DIGITS for c in body) and hmac.compare_digest(check, _checksum(body))


def server_secret(workspace: Workspace, create: bool = False) -> bytes | None:
    """The HMAC secret beside the store (made on first use when `create`)."""
    return workspace.secret_file(SECRET_SUFFIX, lambda: secrets.token_hex(32).encode(), create)


def digest(secret: bytes, key: str) -> str:
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------- the keys
@dataclass(frozen=True)
class NewKey:
    """A created key: `secret` is shown once and then forgotten."""

    key: ApiKey
    secret: str


_SELECT = """
SELECT k.id, k.user_id, u.username, k.name, k.shown, k.deployment_id, d.name AS deployment_name,
       k.created_at, k.last_used_at, k.revoked_at, k.revoked_by
FROM api_keys k JOIN users u ON u.id = k.user_id LEFT JOIN deployments d ON d.id = k.deployment_id
"""


def _audit(tx: Tx, actor: str, action: str, key: ApiKey, after: dict[str, Any]) -> None:
    audit.record(
        tx,
        actor=actor,
        action=action,
        deployment_id=key.deployment_id,
        deployment_name=key.deployment_name or "",
        after={"key": key.id, "name": key.name, "shown": key.shown, **after},
        subject=f"user {key.username}",
    )


def create_key(store: Store, name: str, *, deployment: str | None = None, actor: str) -> NewKey:
    """A new key of the acting user, named (to recognise it later), optionally limited to one
    deployment the user may read. Returns it with its secret, which is shown once."""
    label = name.strip()
    if not label or len(label) > 80:
        raise InvalidInput(
            "A key needs a name of 1-80 characters.", "Say what will use it, e.g. 'nightly job'."
        )
    secret = server_secret(store.workspace, create=True)
    assert secret is not None
    key = generate()

    def write(tx: Tx) -> ApiKey:
        access.require_user(tx, actor, "create an API key")
        user_id = tx.execute("SELECT id FROM users WHERE username = ?", [actor]).scalar()
        if user_id is None:
            raise InvalidInput("Only a user can hold an API key.", "Act as a user to create one.")
        deployment_id = None
        if deployment is not None:
            row = tx.execute(
                "SELECT id, project_id FROM deployments WHERE name = ? OR id = ?",
                [deployment, deployment],
            ).first()
            if row is None:
                raise NotFound("deployment", deployment)
            access.require(tx, actor, row["project_id"], "read")
            deployment_id = row["id"]
        key_id = new_id("key")
        tx.execute(
            "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL)",
            [key_id, user_id, label, key[:SHOWN], digest(secret, key), deployment_id, utcnow()],
        )
        made = _one(tx, key_id)
        _audit(tx, actor, "key-create", made, {"deployment": made.deployment_name})
        return made

    return NewKey(store.write(write), key)


def _one(tx: Tx, key_id: str) -> ApiKey:
    row = tx.execute(_SELECT + " WHERE k.id = ?", [key_id]).first()
    if row is None:
        raise NotFound("API key", key_id, "Choose one of your keys.")
    return ApiKey(**row)


def list_keys(store: Store, *, actor: str, everyone: bool = False) -> list[ApiKey]:
    """The acting user's keys, newest first (every user's for an admin asking `everyone`)."""

    def read(tx: Tx) -> list[ApiKey]:
        if everyone:
            access.require_admin(tx, actor, "list every user's API keys")
            rows = tx.execute(_SELECT + " ORDER BY k.created_at DESC, k.id")
        else:
            rows = tx.execute(
                _SELECT + " WHERE u.username = ? ORDER BY k.created_at DESC, k.id", [actor]
            )
        return [ApiKey(**r) for r in rows]

    return store.read(read)


def revoke_key(store: Store, key_id: str, *, actor: str) -> ApiKey:
    """Revoke a key (its owner or an admin); idempotent, audited the first time."""

    def write(tx: Tx) -> ApiKey:
        key = _one(tx, key_id)
        if key.username != actor:
            access.require_admin(tx, actor, "revoke another user's API key")
        else:
            access.require_user(tx, actor, "revoke an API key")
        if key.revoked_at is not None:
            return key
        tx.execute(
            "UPDATE api_keys SET revoked_at = ?, revoked_by = ? WHERE id = ?",
            [utcnow(), actor, key.id],
        )
        revoked = _one(tx, key.id)
        _audit(tx, actor, "key-revoke", revoked, {})
        return revoked

    return store.write(write)


# ---------------------------------------------------------------------------- checking a call
@dataclass(frozen=True)
class Holder:
    """Who a valid key speaks for."""

    key_id: str
    user_id: str
    username: str
    role: str  # instance role
    deployment_id: str | None


@dataclass(frozen=True)
class KeyRing:
    """Every usable key's digest with its holder, and each user's project roles: what the API
    needs to decide a call without opening the store. Read in one transaction."""

    secret: bytes
    holders: dict[str, Holder]
    roles: dict[str, dict[str, str]]  # user id -> project id -> role
    read_at: datetime

    def holder(self, header: str | None) -> Holder:
        """The holder of the `Authorization: Bearer <key>` header; Unauthorized for a missing,
        malformed, unknown or revoked key (or a disabled user's)."""
        if not header:
            raise Unauthorized(
                "This deployment needs an API key.",
                "Send it as 'Authorization: Bearer mdk_...'; create one on your account page.",
            )
        scheme, _, key = header.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not well_formed(key):
            raise Unauthorized(
                "The Authorization header does not hold a ModelDeck API key.",
                "Send 'Authorization: Bearer mdk_...' with the whole key as it was shown.",
            )
        found = self.holders.get(digest(self.secret, key))
        if found is None:
            raise Unauthorized(
                "This API key is unknown or was revoked.", "Create a new key and use it."
            )
        return found

    def may_call(
        self, holder: Holder | None, level: str, project_id: str, deployment_id: str
    ) -> bool:
        """Whether a caller (None: no key) may call a deployment at its access level."""
        if level == "public":
            return True
        if holder is None or holder.deployment_id not in (None, deployment_id):
            return False
        if level == "instance" or holder.role == "admin":
            return True
        return project_id in self.roles.get(holder.user_id, {})


def load_ring(store: Store) -> KeyRing:
    """The current KeyRing (creates the server secret if it is missing)."""
    secret = server_secret(store.workspace, create=True)
    assert secret is not None

    def read(tx: Tx) -> KeyRing:
        holders = {
            r["digest"]: Holder(r["id"], r["user_id"], r["username"], r["role"], r["deployment_id"])
            for r in tx.execute(
                "SELECT k.id, k.digest, k.user_id, k.deployment_id, u.username, u.role"
                " FROM api_keys k JOIN users u ON u.id = k.user_id"
                " WHERE k.revoked_at IS NULL AND NOT u.disabled"
            )
        }
        roles: dict[str, dict[str, str]] = {}
        for r in tx.execute("SELECT user_id, project_id, role FROM collaborators"):
            roles.setdefault(r["user_id"], {})[r["project_id"]] = r["role"]
        return KeyRing(secret, holders, roles, utcnow())

    return store.read(read)


def record_use(store: Store, last_used: dict[str, datetime]) -> None:
    """Write the keys' last-used times in one batch (the API collects them between writes)."""
    if last_used:
        store.write(
            lambda tx: [
                tx.execute(
                    "UPDATE api_keys SET last_used_at = greatest(coalesce(last_used_at, ?), ?)"
                    " WHERE id = ?",
                    [at, at, key_id],
                )
                for key_id, at in last_used.items()
            ]
        )
