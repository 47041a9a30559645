"""Issue H: expired, used and voided links through the pages and the session route (SQLite and
PostgreSQL): activation links, reset links, login tickets. Reuse and expiry at the service level
are tests/services/test_accounts.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user, token_of, ui_state
from tests.scenarios.abuse_helpers import ORIGIN, PW, _run, _ticket
from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import session_scope
from vgen_app.services import accounts, passwords


@pytest.fixture
def client(asgi_app: Any, database_url: str) -> Iterator[TestClient]:
    with TestClient(asgi_app, base_url=ORIGIN) as c:
        yield c


def test_expired_activation_link_through_the_page(database_url: str) -> None:
    from vgen_app.ui.auth import VerifyState

    with session_scope() as db:
        token = token_of(accounts.signup(db, "ann@example.com", PW).mails[0])
    clock.travel(timedelta(hours=get_settings().link_ttl_hours, seconds=1))
    state = ui_state(VerifyState, f"/verify?token={token}")
    _run(state, "on_load")
    assert state.verify_status == "error" and "expired" in state.verify_message
    with session_scope() as db, pytest.raises(accounts.UnverifiedLogin):
        accounts.login(db, "ann@example.com", PW)  # still not activated


def test_reset_links_used_voided_or_expired_through_the_page(database_url: str) -> None:
    from vgen_app.ui.auth import ResetState

    def page(token: str) -> Any:
        state = ui_state(ResetState, f"/reset?token={token}")
        _run(state, "on_load")
        return state

    def submit(state: Any, password: str) -> None:
        _run(state, "submit", {"password": password, "confirm": password})

    def link(db: Any) -> str:
        clock.travel(timedelta(seconds=get_settings().mail_link_interval_seconds + 1))
        return token_of(passwords.request_password_reset(db, "ann@example.com").mails[0])

    with session_scope() as db:
        make_user(db, "ann@example.com")
        used, older = link(db), None
    first = page(used)
    submit(first, "first new password")
    assert first.reset_status == "done"
    again = page(used)  # the same link, opened again
    assert again.reset_status == "error" and again.reset_error == passwords.BAD_RESET_LINK

    with session_scope() as db:
        older = link(db)
        newer = link(db)
    assert page(older).reset_status == "error"  # voided by the newer link
    open_form = page(newer)
    assert open_form.reset_status == "form"
    clock.travel(timedelta(hours=get_settings().link_ttl_hours, seconds=1))
    submit(open_form, "second new password")  # the form stayed open past the link's expiry
    assert open_form.reset_status == "error" and open_form.reset_error == passwords.BAD_RESET_LINK
    with session_scope() as db:
        assert login_session(db, "ann@example.com", "first new password")


def test_expired_login_ticket_through_the_session_route(client: TestClient) -> None:
    ticket = _ticket()
    clock.travel(timedelta(seconds=get_settings().login_ticket_ttl_seconds + 1))
    response = client.get(f"/api/auth/session?ticket={ticket}", follow_redirects=False)
    assert response.headers["location"] == f"{ORIGIN}/login?expired=1"
    assert "set-cookie" not in response.headers
