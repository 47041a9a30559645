"""App paths (the landing and e-mails link to them)."""

HOME = "/"
SIGNUP = "/signup"
LOGIN = "/login"
CHECK_EMAIL = "/check-email"
VERIFY = "/verify"
FORGOT = "/forgot"
RESET = "/reset"
TASKS_NEW = "/tasks/new"
TOKENS = "/tokens"

SESSION_ROUTE = "/api/auth/session"
LOGOUT_ROUTE = "/api/auth/logout"
