"""`modeldeck keys create|list|revoke` and `modeldeck access` (issue 17 item 13): a key is
printed once and never listed, revocation works, access levels are owners' to change."""

from __future__ import annotations

import pytest

from core import audit, deployments, keys, projects, registry, users
from core.store import Store
from tests.cli_helpers import run, run_json


@pytest.fixture
def people(trained_store: Store) -> Store:
    for name, role in (("olga", "owner"), ("vic", "viewer")):
        users.create_user(trained_store, name, password=None, actor="tester")
        projects.set_collaborator(trained_store, "Default", name, role, actor="tester")
    model = registry.list_models(trained_store)[0]
    deployments.deploy(trained_store, model.id, "staging", name="churn-staging", actor="tester")
    return trained_store


def test_a_key_is_printed_once_and_lists_show_only_its_start(
    people: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "keys", "create", "nightly job", user="vic")
    assert code == 0 and "Shown once" in out
    secret = next(w for w in out.split() if w.startswith("mdk_"))
    assert keys.well_formed(secret)
    listed = run_json(capsys, "keys", "list", user="vic")
    assert [k["name"] for k in listed] == ["nightly job"] and secret not in str(listed)
    assert listed[0]["shown"] == secret[:10] + "…"
    code, out, _ = run(capsys, "keys", "list", user="olga")
    assert code == 0 and "no keys yet" in out
    code, _, err = run(capsys, "keys", "list", "--all", user="vic")
    assert code == 3 and "instance admin" in err
    assert len(run_json(capsys, "keys", "list", "--all", user="tester")) == 1


def test_revoking_a_key(people: Store, capsys: pytest.CaptureFixture[str]) -> None:
    made = run_json(capsys, "keys", "create", "k", "--deployment", "churn-staging", user="vic")
    assert made["deployment"] == "churn-staging" and keys.well_formed(made["key"])
    code, _, err = run(capsys, "keys", "revoke", made["id"], user="olga")
    assert code == 3 and "revoke another user's API key" in err
    code, out, _ = run(capsys, "keys", "revoke", made["id"], user="vic")
    assert code == 0 and "calls with it now get 401" in out
    assert run_json(capsys, "keys", "list", user="vic")[0]["revoked_at"] is not None
    code, _, err = run(capsys, "keys", "revoke", "key_nope", user="vic")
    assert code == 2 and "No API key 'key_nope'" in err


def test_access_is_an_owners_to_change(people: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "access", "churn-staging", "public", user="vic")
    assert code == 3 and "need the owner role" in err
    assert run_json(capsys, "access", "churn-staging", "public", user="olga") == {
        "deployment": "churn-staging",
        "access": "public",
    }
    [entry] = [e for e in audit.list_entries(people, "churn-staging") if e.action == "access"]
    assert (entry.actor, entry.after) == ("olga", {"access": "public"})
    code, _, err = run(capsys, "access", "churn-staging", "everyone", user="olga")
    assert code == 2 and "Unknown access level 'everyone'" in err and "public, instance" in err
