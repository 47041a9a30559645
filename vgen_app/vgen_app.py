"""The app: pages, the API sub-app, lifespan tasks — wiring only."""

import sys

import reflex as rx

from vgen_app import cpu
from vgen_app.api.app import create_api
from vgen_app.logs import configure_logging
from vgen_app.ui import connection, format, routes, session, state_store
from vgen_app.ui.account import AccountEmailState, AccountState
from vgen_app.ui.account_page import account_email_page, account_page
from vgen_app.ui.auth import LoginState, ResetState, VerifyState
from vgen_app.ui.auth_pages import (
    check_email_page,
    forgot_page,
    login_page,
    reset_page,
    signup_page,
    verify_page,
)
from vgen_app.ui.dashboard import DashboardState, dashboard_page
from vgen_app.ui.eventlog import EventLogMiddleware
from vgen_app.ui.new_task import new_task_page
from vgen_app.ui.not_found import not_found_page
from vgen_app.ui.payment import (
    PaymentSuccessState,
    TestCheckoutState,
    payment_success_page,
    test_checkout_page,
)
from vgen_app.ui.probe import ProbeState  # noqa: F401 - the no-op floor of bench/event_roundtrip.py
from vgen_app.ui.session import SessionState
from vgen_app.ui.task import TaskState
from vgen_app.ui.task_page import task_page
from vgen_app.ui.tokens import TokensState, tokens_page
from vgen_app.worker import analytics_shipper, generation_worker, housekeeping

configure_logging()
state_store.install()  # before the app builds its state manager
# The database threads take the GIL again after every SQLite or psycopg call and hand each result
# back to the event loop; with CPython's default 5 ms switch interval such a thread can wait up to
# 5 ms for a busy loop to let go. At 1 ms all 200 tabs' dashboard refresh at once drains ~15 %
# sooner (bench/event_roundtrip.py, BENCHMARKS.md note 1).
GIL_SWITCH_S = 0.001
sys.setswitchinterval(GIL_SWITCH_S)

app = rx.App(
    api_transformer=create_api(),
)
# Plain words, not Reflex's technical toast, while the socket is down.
app.app_wraps[(5, "Overlay")] = connection.overlay

# (page, route, tab title (a state var: the whole title), on_load after SessionState.enter_page,
# which runs first on every page)
PAGES = [
    (dashboard_page, routes.HOME, "My tasks", DashboardState.on_load),
    (new_task_page, routes.TASKS_NEW, "New task", SessionState.require_login),
    (task_page, routes.TASK, TaskState.tab_title, TaskState.on_load),
    (signup_page, routes.SIGNUP, "Sign up", SessionState.redirect_if_logged_in),
    (login_page, routes.LOGIN, "Log in", LoginState.on_load),
    (check_email_page, routes.CHECK_EMAIL, "Check your e-mail", None),
    (verify_page, routes.VERIFY, "Activate", VerifyState.on_load),
    (forgot_page, routes.FORGOT, "Forgot password", None),
    (reset_page, routes.RESET, "Reset password", ResetState.on_load),
    (tokens_page, routes.TOKENS, "Tokens", TokensState.on_load),
    (payment_success_page, routes.TOKENS_SUCCESS, "Payment", PaymentSuccessState.on_load),
    (test_checkout_page, routes.TEST_CHECKOUT, "Test checkout", TestCheckoutState.on_load),
    (account_page, routes.ACCOUNT, "Account", AccountState.on_load),
    (account_email_page, routes.ACCOUNT_EMAIL, "Your e-mail address", AccountEmailState.on_load),
    (not_found_page, "404", "Page not found", SessionState.check_session),
]
for page, route, title, on_load in PAGES:
    loads = [SessionState.enter_page] + ([on_load] if on_load is not None else [])
    app.add_page(
        page,
        route=route,
        title=title if isinstance(title, rx.Var) else format.tab_title(title),
        on_load=loads,
    )


def _tab_connected(client_token: str) -> bool:
    """Is this tab's socket connected to this process (a page follower ends when not)?"""
    namespace = app.event_namespace
    return namespace is None or client_token in namespace.token_to_sid


session.tab_connected = _tab_connected

app.add_middleware(EventLogMiddleware())
# First, on the loop thread as the worker starts (a plain function: called right there): the
# loop and the database threads on one CPU (vgen_app/cpu.py).
app.register_lifespan_task(cpu.pin_loop_thread)
app.register_lifespan_task(housekeeping)
app.register_lifespan_task(generation_worker)
app.register_lifespan_task(analytics_shipper)
