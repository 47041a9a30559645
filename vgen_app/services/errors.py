"""The refusals services raise: a stable `code` for callers and a `message` fit for the user.

One small hierarchy instead of one copy per module: a page or a route catches `ServiceError` (or a
feature's subclass) and shows `message`; tests and routes branch on `code`."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal with a message fit to show the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class AccountError(ServiceError):
    """Sign-up, login, links, passwords, statuses."""


class BillingError(ServiceError):
    """Packages, checkouts, payment events."""


class TaskError(ServiceError):
    """Tasks, their inputs and their runs."""


class NotFound(TaskError):
    """Unknown, or someone else's: the same answer either way."""

    def __init__(self, what: str = "task") -> None:
        super().__init__("not_found", f"This {what} does not exist.")
