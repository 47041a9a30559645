"""The app: pages, the API sub-app, lifespan tasks — wiring only."""

import reflex as rx

from vgen_app.api.app import create_api
from vgen_app.logs import configure_logging
from vgen_app.ui import routes
from vgen_app.ui.auth import ForgotState, LoginState, ResetState, VerifyState
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

app = rx.App(
    api_transformer=create_api(),
)

app.add_page(
    dashboard_page, route=routes.HOME, title="My tasks · vgen", on_load=DashboardState.on_load
)
app.add_page(
    new_task_page,
    route=routes.TASKS_NEW,
    title="New task · vgen",
    on_load=SessionState.require_login,
)
app.add_page(task_page, route="/tasks/[task_id]", title="Task · vgen", on_load=TaskState.on_load)
app.add_page(
    signup_page,
    route=routes.SIGNUP,
    title="Sign up · vgen",
    on_load=SessionState.redirect_if_logged_in,
)
app.add_page(login_page, route=routes.LOGIN, title="Log in · vgen", on_load=LoginState.on_load)
app.add_page(check_email_page, route=routes.CHECK_EMAIL, title="Check your e-mail · vgen")
app.add_page(verify_page, route=routes.VERIFY, title="Activate · vgen", on_load=VerifyState.on_load)
app.add_page(
    forgot_page, route=routes.FORGOT, title="Forgot password · vgen", on_load=ForgotState.on_load
)
app.add_page(
    reset_page, route=routes.RESET, title="Reset password · vgen", on_load=ResetState.on_load
)
app.add_page(tokens_page, route=routes.TOKENS, title="Tokens · vgen", on_load=TokensState.on_load)
app.add_page(
    payment_success_page,
    route=routes.TOKENS_SUCCESS,
    title="Payment · vgen",
    on_load=PaymentSuccessState.on_load,
)
app.add_page(
    test_checkout_page,
    route=routes.TEST_CHECKOUT,
    title="Test checkout · vgen",
    on_load=TestCheckoutState.on_load,
)
app.add_page(
    not_found_page, route="404", title="Page not found · vgen", on_load=SessionState.check_session
)

app.add_middleware(EventLogMiddleware())
app.register_lifespan_task(housekeeping)
app.register_lifespan_task(generation_worker)
app.register_lifespan_task(analytics_shipper)
