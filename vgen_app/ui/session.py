"""The session guard every protected page and every user-data handler goes through."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import reflex as rx
from reflex.istate.proxy import StateProxy
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

    async def refresh_user(self: SessionState) -> None:
        """Re-read the header's balance (after a debit, a refund or a credit)."""
        await self.current_user()

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


async def _refused(state: Any) -> rx.event.EventSpec | None:
    """The session check of `signed_in`: None for a live session (its user id is then in
    `state._user_id`), else the redirect to the login page. A background handler's state is a
    proxy: the check takes its lock."""
    if isinstance(state, StateProxy) and not state._is_mutable():
        async with state:
            return await _refused(state)
    if await state.current_user() is None:
        return state._login_redirect()
    return None


def signed_in(handler: Callable[..., Any]) -> Callable[..., Any]:
    """The session guard for every UI event handler that reads or changes a user's data.

    Before the body runs, the session is checked on the server (the HttpOnly cookie from the
    socket's handshake, then the database); without a live one the tab goes to the login page
    and the body never runs. The body finds the checked user's id in `self._user_id`. Put it
    under `@rx.event` (`@rx.event(background=True)` too): the signature is kept for Reflex."""
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(self: Any, *args: Any, **kwargs: Any):
            if (to_login := await _refused(self)) is not None:
                yield to_login
                return
            async for update in handler(self, *args, **kwargs):
                yield update

        return stream
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{handler.__name__}: the guard wraps async handlers")

    @functools.wraps(handler)
    async def call(self: Any, *args: Any, **kwargs: Any):
        if (to_login := await _refused(self)) is not None:
            return to_login
        return await handler(self, *args, **kwargs)

    return call


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
    @signed_in
    async def require_login(self):
        """`on_load` of the protected pages with nothing else to load."""

    @rx.event
    async def check_session(self):
        """`on_load` of pages open to everyone that show the header to a signed-in user (404)."""
        await self.current_user()

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
