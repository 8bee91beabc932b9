"""API keys (issue 17 item 13) and the access decision of a call (item 12), on a real store:
the key's shape and checksum, shown once and stored as an HMAC, revocation, and the access
matrix of the three levels."""

from __future__ import annotations

import pytest

from core import audit, keys, projects, users
from core.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from core.store import Store, utcnow


def test_a_key_has_a_prefix_random_body_and_a_checksum() -> None:
    made = {keys.generate() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert key.startswith("mdk_") and len(key) == 4 + 43 + 6 and keys.well_formed(key)
    key = made.pop()
    typo = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    assert not keys.well_formed(typo)  # the checksum catches a typo offline
    assert not keys.well_formed(key[:-1]) and not keys.well_formed("ghp_" + key[4:])
    assert not keys.well_formed(key[:20] + "!" + key[21:])


@pytest.fixture
def people(store: Store) -> Store:
    """tester (admin), olga owning project Shop, vic viewing it, otto outside it."""
    for name in ("olga", "vic", "otto"):
        users.create_user(store, name, password=None, actor="tester")
    projects.create_project(store, "Shop", actor="olga")
    projects.set_collaborator(store, "Shop", "vic", "viewer", actor="olga")
    return store


def test_a_key_is_shown_once_and_stored_as_an_hmac(people: Store) -> None:
    made = keys.create_key(people, " nightly job ", actor="vic")
    assert keys.well_formed(made.secret) and made.key.name == "nightly job"
    assert made.key.shown == made.secret[:10] and made.key.username == "vic"
    stored = people.query("SELECT * FROM api_keys").dicts()
    assert len(stored) == 1 and made.secret not in str(stored)
    secret = keys.server_secret(people.workspace)
    assert secret is not None and stored[0]["digest"] == keys.digest(secret, made.secret)
    assert oct((people.workspace.home / "modeldeck.duckdb.api-secret").stat().st_mode)[-3:] == "600"
    assert [k.id for k in keys.list_keys(people, actor="vic")] == [made.key.id]
    assert keys.list_keys(people, actor="otto") == []
    [entry] = audit.list_entries(people, subject="user vic")[:1]
    assert (entry.actor, entry.action, entry.after["key"]) == ("vic", "key-create", made.key.id)
    assert made.secret not in str(entry)


def test_bad_key_requests_are_refused(people: Store) -> None:
    with pytest.raises(InvalidInput, match="needs a name"):
        keys.create_key(people, "  ", actor="vic")
    with pytest.raises(NotFound):
        keys.create_key(people, "x", deployment="no-such-deployment", actor="vic")
    with pytest.raises(Forbidden, match="'ghost' does not exist"):
        keys.create_key(people, "x", actor="ghost")
    users.set_disabled(people, "otto", True, actor="tester")
    with pytest.raises(Forbidden, match="'otto' is disabled"):
        keys.create_key(people, "x", actor="otto")
    assert people.query("SELECT count(*) FROM api_keys").scalar() == 0


def test_revoking_is_for_the_holder_or_an_admin_and_takes_the_key_off_the_ring(
    people: Store,
) -> None:
    mine = keys.create_key(people, "mine", actor="vic")
    header = f"Bearer {mine.secret}"
    assert keys.load_ring(people).holder(header).username == "vic"
    with pytest.raises(Forbidden, match="need to be an instance admin"):
        keys.revoke_key(people, mine.key.id, actor="otto")
    revoked = keys.revoke_key(people, mine.key.id, actor="vic")
    assert revoked.revoked_by == "vic" and not revoked.active
    assert keys.revoke_key(people, mine.key.id, actor="tester") == revoked  # idempotent
    with pytest.raises(Unauthorized, match="unknown or was revoked"):
        keys.load_ring(people).holder(header)
    other = keys.create_key(people, "other", actor="olga")
    keys.revoke_key(people, other.key.id, actor="tester")  # an admin may
    actions = [e.action for e in audit.list_entries(people) if e.action.startswith("key-")]
    assert actions == ["key-revoke", "key-create", "key-revoke", "key-create"]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, "needs an API key"),
        ("", "needs an API key"),
        ("Basic dXNlcjpwYXNz", "does not hold a ModelDeck API key"),
        ("Bearer mdk_short", "does not hold a ModelDeck API key"),
        ("Bearer " + keys.generate(), "unknown or was revoked"),
    ],
    # fixed ids: a generated key in an id would differ between pytest-xdist workers
    ids=["no-header", "empty", "basic", "short", "unknown-key"],
)
def test_a_call_without_a_usable_key_is_unauthorized(
    people: Store, header: str | None, problem: str
) -> None:
    with pytest.raises(Unauthorized, match=problem) as refused:
        keys.load_ring(people).holder(header)
    assert refused.value.status == 401


def test_a_disabled_users_keys_stop_working(people: Store) -> None:
    made = keys.create_key(people, "k", actor="otto")
    users.set_disabled(people, "otto", True, actor="tester")
    with pytest.raises(Unauthorized):
        keys.load_ring(people).holder(f"Bearer {made.secret}")


def test_the_access_matrix(people: Store) -> None:
    """3 levels x {no key, outsider, viewer, owner, admin, a key limited to another
    deployment}: whether the call is let through."""
    shop = projects.get_project(people, "Shop").id
    held = {
        who: keys.create_key(people, who, actor=who).secret
        for who in ("otto", "vic", "olga", "tester")
    }
    ring = keys.load_ring(people)
    holders: dict[str, keys.Holder | None] = {"no key": None}
    holders |= {who: ring.holder(f"Bearer {secret}") for who, secret in held.items()}
    limited = keys.Holder("key_x", holders["vic"].user_id, "vic", "member", "dep_other")  # type: ignore[union-attr]
    holders["vic, limited to another"] = limited
    expected = {
        "public": dict.fromkeys(holders, True),
        "instance": {
            **dict.fromkeys(holders, True),
            "no key": False,
            "vic, limited to another": False,
        },
        "project": {
            "no key": False,
            "otto": False,
            "vic": True,
            "olga": True,
            "tester": True,
            "vic, limited to another": False,
        },
    }
    for level, outcome in expected.items():
        got = {who: ring.may_call(h, level, shop, "dep_shop") for who, h in holders.items()}
        assert got == outcome, level


def test_last_used_times_are_written_in_a_batch(people: Store) -> None:
    made = keys.create_key(people, "k", actor="vic")
    assert keys.list_keys(people, actor="vic")[0].last_used_at is None
    now = utcnow()
    keys.record_use(people, {made.key.id: now})
    assert keys.list_keys(people, actor="vic")[0].last_used_at == now
