"""The session guard every protected page and every user-data handler goes through."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import reflex as rx
from sqlmodel import Session

from vgen_app.db import read_only, run_db
from vgen_app.services import clientinfo, sessions
from vgen_app.services.accounts import ClientInfo
from vgen_app.services.cookies import token_from_cookie_header
from vgen_app.services.sessions import SessionUser
from vgen_app.ui import routes

T = TypeVar("T")


class _SessionGuard:
    """The session check, as plain methods. Reflex turns every public method defined on a State
    class into an event handler a client can invoke over the socket; these are helpers for the
    handlers, not events, so they live on a plain mixin that Reflex does not register."""

    def client_info(self: SessionState) -> ClientInfo:
        headers = dict(self.router.headers.raw_headers)
        return clientinfo.from_request(headers, self.router.session.client_ip or None)

    async def current_user(self: SessionState) -> SessionUser | None:
        token = token_from_cookie_header(self.router.headers.cookie)
        user = await run_db(sessions.validate, token) if token else None
        self._set_user(user)
        return user

    async def current_user_and(
        self: SessionState, read: Callable[..., T], *args: Any
    ) -> tuple[SessionUser | None, T | None]:
        """The session check and one read-only service for that user (`read(db, user_id, *args)`)
        in one database call: one thread hop and one session per event. The read runs only for a
        live session; without one the result is None."""
        if not getattr(read, "read_only", False):
            raise TypeError(f"{read.__name__} is not @read_only")
        token = token_from_cookie_header(self.router.headers.cookie)
        user, result = await run_db(_check_then_read, token, read, *args) if token else (None, None)
        self._set_user(user)
        return user, result

    def _set_user(self: SessionState, user: SessionUser | None) -> None:
        if user is None:
            self.user_email, self.balance, self.authenticated = "", 0, False
            self._user_id = ""
        else:
            self.user_email, self.balance, self.authenticated = user.email, user.balance, True
            self._user_id = user.user_id


@read_only
def _check_then_read(db: Session, token: str, read: Callable[..., T], *args: Any) -> tuple:
    user = sessions.validate(db, token)
    return user, (read(db, user.user_id, *args) if user is not None else None)


class SessionState(_SessionGuard, rx.State):
    """Who is logged in, as last checked on the server. Client state is never trusted:
    `current_user()` re-reads the HttpOnly cookie from the socket's handshake and the database."""

    user_email: str = ""
    balance: int = 0
    authenticated: bool = False
    _user_id: str = ""  # backend only: for logs

    @rx.var
    def balance_label(self) -> str:
        return f"{self.balance:,}"

    def _login_redirect(self) -> rx.event.EventSpec:
        path = self.router.url.path or "/"
        query = self.router.url.query
        target = path + (f"?{query}" if query else "")
        return rx.redirect(f"{routes.LOGIN}?next={quote(target, safe='')}")

    @rx.event
    async def require_login(self):
        """`on_load` of every protected page."""
        if await self.current_user() is None:
            return self._login_redirect()

    @rx.event
    async def redirect_if_logged_in(self):
        """`on_load` of the auth pages: a logged-in user goes to the app."""
        if await self.current_user() is not None:
            return rx.redirect(routes.HOME)

    @rx.event
    def logout(self):
        self.user_email, self.balance, self.authenticated = "", 0, False
        # The cookie is HttpOnly: only the server can clear it. Then a full load opens a new socket.
        return rx.call_script(
            f"fetch({json.dumps(routes.api(routes.LOGOUT_ROUTE))}, "
            "{method: 'POST', credentials: 'include'})"
            f".finally(() => window.location.assign({json.dumps(routes.LOGIN)}))"
        )
