"""App paths (the landing and e-mails link to them)."""

HOME = "/"
SIGNUP = "/signup"
LOGIN = "/login"
CHECK_EMAIL = "/check-email"
VERIFY = "/verify"
FORGOT = "/forgot"
RESET = "/reset"
TASKS_NEW = "/tasks/new"
TASK = "/tasks/[task_id]"  # the route pattern of a task page
TOKENS = "/tokens"
TOKENS_SUCCESS = "/tokens/success"
TEST_CHECKOUT = "/checkout/test"
ACCOUNT = "/account"
ACCOUNT_EMAIL = "/account/email"  # the e-mail change link opens it (services/emails.py)

SESSION_ROUTE = "/api/auth/session"
LOGOUT_ROUTE = "/api/auth/logout"


def api(path: str) -> str:
    """Absolute URL of a backend route: the app's own origin in production (one port), the
    backend port under `make dev`."""
    from reflex_base.config import get_config

    return f"{get_config().api_url.rstrip('/')}{path}"
