"""The API key generator in the app (issue 17 item 13): on the Account page and a deployment's
General section a key is created and shown once, listed by its first characters only, and
revoked; a key made on a deployment's page is limited to it."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from core import access, deployments, keys, projects, registry, users
from core.store import Store

OpenPage = Callable[..., AppTest]


def _codes(at: AppTest) -> list[str]:
    return [c.value for c in at.code]


def test_the_account_page_makes_shows_once_and_revokes_a_key(
    store: Store, open_page: OpenPage
) -> None:
    users.create_user(store, "pat", password=None, actor=access.BOOTSTRAP)
    at = open_page("pages/account.py", as_user="pat")
    at.text_input(key="key_name_all").input("nightly job")
    next(b for b in at.button if b.label == "Create key").click().run()
    assert not at.exception and [s.value for s in at.success] == ["Created the key 'nightly job'."]
    secret = next(c for c in _codes(at) if c.startswith("mdk_"))
    [made] = keys.list_keys(store, actor="pat")
    assert keys.well_formed(secret) and made.name == "nightly job"
    assert f"`{secret[:10]}…` **nightly job**" in str([m.value for m in at.markdown])
    at.run()  # the next run: the secret is gone for good
    assert not any(c.startswith("mdk_") for c in _codes(at))
    at.button(key=f"revoke_all_{made.id}").click().run()
    assert "calls with it now get 401" in at.success[0].value
    assert not keys.list_keys(store, actor="pat")[0].active
    assert "revoked by pat" in str([m.value for m in at.markdown])


def test_a_key_made_on_a_deployment_page_is_limited_to_it(
    trained_store: Store, open_page: OpenPage
) -> None:
    model = registry.list_models(trained_store)[0]
    d = deployments.deploy(trained_store, model.id, "staging", name="churn-staging", actor="tester")
    users.create_user(trained_store, "vic", password=None, actor=access.BOOTSTRAP)
    projects.set_collaborator(trained_store, "Default", "vic", "viewer", actor="tester")
    at = open_page("pages/deployment.py", as_user="vic", name=d.name)
    assert not [t for t in at.text_input if t.key == f"key_name_{d.id}"]  # closed: not run
    at.session_state[f"keys_open_{d.id}"] = True  # the user opens "Call it over the API"
    at.run()
    at.text_input(key=f"key_name_{d.id}").input("dashboard")
    next(b for b in at.button if b.label == "Create key").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.success[0].value == "Created the key 'dashboard', for churn-staging only."
    assert any(
        "Bearer mdk_" in c and "/v1/deployments/churn-staging/invocations" in c for c in _codes(at)
    )
    [made] = keys.list_keys(trained_store, actor="vic")
    assert made.deployment_name == "churn-staging"


def test_the_call_shown_uses_the_running_apis_address(
    trained_store: Store, open_page: OpenPage
) -> None:
    """An API started on another port (or behind another address) publishes it in its status
    file; the deployment's page and the new key's curl use it, not the default port."""
    import os

    from core import api_status
    from core.store import utcnow

    model = registry.list_models(trained_store)[0]
    d = deployments.deploy(trained_store, model.id, "staging", name="churn-staging", actor="tester")
    running = api_status.ApiState(
        os.getpid(), utcnow(), utcnow(), {}, None, address="http://127.0.0.1:8123"
    )
    api_status.write(trained_store.workspace, running)
    at = open_page("pages/deployment.py", name=d.name)
    at.session_state[f"keys_open_{d.id}"] = True
    at.run()
    at.text_input(key=f"key_name_{d.id}").input("dashboard")
    next(b for b in at.button if b.label == "Create key").click().run()
    assert not at.exception, [e.value for e in at.exception]
    texts = str([m.value for m in at.markdown])
    assert "POST http://127.0.0.1:8123/v1/deployments/churn-staging/invocations" in texts
    assert "127.0.0.1:8000" not in texts
    assert any(c.startswith("curl -X POST http://127.0.0.1:8123/v1/") for c in _codes(at))


def test_general_runs_its_keys_and_delete_forms_only_once_opened(
    trained_store: Store, open_page: OpenPage
) -> None:
    model = registry.list_models(trained_store)[0]
    d = deployments.deploy(trained_store, model.id, "staging", name="churn-staging", actor="tester")
    at = open_page("pages/deployment.py", name=d.name)
    assert not at.exception
    labels = {e.label for e in at.expander}
    assert {"Call it over the API: API keys", "Delete this deployment"} <= labels
    shown = {t.key for t in at.text_input}
    assert f"key_name_{d.id}" not in shown and f"delete_confirm_{d.id}" not in shown
    at.session_state[f"keys_open_{d.id}"] = True  # the user opens both: they stay open
    at.session_state[f"delete_open_{d.id}"] = True
    at.run()
    assert not at.exception
    shown = {t.key for t in at.text_input}
    assert f"key_name_{d.id}" in shown and f"delete_confirm_{d.id}" in shown
    assert any(b.label == "Create key" for b in at.button)
