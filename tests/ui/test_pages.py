"""What a page keeps and forgets (issue K): a form answered right after the page loaded is never
wiped by the page's own on_load; the pages a tab leaves forget their answers."""

from __future__ import annotations

import asyncio

from reflex.istate.data import RouterData

from tests.helpers import ORIGIN
from vgen_app.ui import routes
from vgen_app.ui.session import SessionState


def _at(state: SessionState, path: str, pattern: str | None = None) -> None:
    state.router = RouterData.from_router_data(
        {
            "headers": {"origin": ORIGIN},
            "asPath": path,
            "pathname": pattern or path,
            "token": "client-token",
        }
    )


def _all(state: SessionState) -> list[SessionState]:
    """Every state below `state` (a page's state may sit below a state that is not a page's)."""
    return [s for sub in state.substates.values() for s in (sub, *_all(sub))]


def _sub(root: SessionState, cls: type) -> SessionState:
    return next(s for s in _all(root) if isinstance(s, cls))


def test_entering_a_page_keeps_its_answer_and_clears_the_pages_left() -> None:
    from vgen_app.ui.auth import ForgotState, LoginState
    from vgen_app.ui.task import TaskState

    root = SessionState()
    forgot, login, task = (_sub(root, c) for c in (ForgotState, LoginState, TaskState))
    _at(root, "/tasks/abc", routes.TASK)
    asyncio.run(root.enter_page())
    task.run_error = "This task is already running."
    _at(root, routes.LOGIN)
    asyncio.run(root.enter_page())
    assert task.run_error == ""  # the page left behind forgets its answer
    login.login_error = "Wrong e-mail or password."

    # To /forgot: the form is answered before the page's on_load chain runs.
    _at(root, routes.FORGOT)
    forgot.forgot_done = "If an account exists for ann@example.com, we have sent it a link."
    asyncio.run(root.enter_page())
    assert forgot.forgot_done.startswith("If an account exists")  # kept
    assert login.login_error == ""
    asyncio.run(root.enter_page())  # the same page's chain again: still kept
    assert forgot.forgot_done.startswith("If an account exists")

    _at(root, routes.LOGIN)
    asyncio.run(root.enter_page())
    assert forgot.forgot_done == ""  # left: the next visit starts with the form


def test_every_page_state_names_its_route() -> None:
    """enter_page resets by route: a state that shows a page and has no PAGE would keep stale
    answers (and one with a wrong PAGE would lose fresh ones)."""
    import vgen_app.vgen_app as wiring

    routes_of_pages = {route for _page, route, _title, _load in wiring.PAGES}
    for state in _all(SessionState()):
        if type(state).__name__ in {"ProbeState", "CheckEmailState"}:
            continue  # no form: nothing to forget
        if type(state).__name__ == "TaskListMemory":
            continue  # what My tasks remembers while the tab is elsewhere: never reset
        assert state.PAGE in routes_of_pages, type(state).__name__


def test_the_home_page_is_recognised_under_reflexs_name_for_it() -> None:
    """Reflex reports the home page's route as "/index": it is routes.HOME all the same (else
    entering My tasks would wipe it, and its follower would never reload it)."""
    from vgen_app.ui.dashboard import DashboardState

    root = SessionState()
    dashboard = _sub(root, DashboardState)
    _at(root, "/", "/index")
    dashboard.tasks_total = 3
    asyncio.run(root.enter_page())
    assert root._page == routes.HOME and dashboard.tasks_total == 3


def test_a_tab_whose_session_ended_is_told_so_on_the_login_page(database_url: str) -> None:
    from tests.helpers import ui_state
    from vgen_app.ui.auth import LoginState

    state = ui_state(SessionState, "/tokens", cookie="vgen_session=gone")
    state.authenticated = True  # this tab was signed in; its session has ended since
    redirect = str(asyncio.run(state.require_login()))
    assert "/login?next=%2Ftokens&ended=1" in redirect
    fresh = ui_state(SessionState, "/tokens")  # never signed in here: no such claim
    assert "ended=1" not in str(asyncio.run(fresh.require_login()))

    for query, notice in [
        ("ended=1", "Your session has ended. Please log in again."),
        ("logged_out=1", "You are logged out."),
        ("expired=1", "Your login link expired. Please log in again."),
        ("", ""),
    ]:
        login = ui_state(LoginState, f"/login?{query}")
        asyncio.run(login.on_load())
        assert login.login_notice == notice
    login = ui_state(LoginState, "/login?email=Ann%40Example.com")
    asyncio.run(login.on_load())
    assert login.login_email == "ann@example.com"  # filled in after activation
    login = ui_state(LoginState, "/login?email=<script>")
    asyncio.run(login.on_load())
    assert login.login_email == ""  # never echoes arbitrary text
