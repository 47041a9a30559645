"""The session guard every protected page and every user-data handler goes through."""

from __future__ import annotations

import functools
import inspect
import json
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import reflex as rx
from reflex.istate.proxy import StateProxy
from sqlmodel import Session

from vgen_app.adapters.changes import get_feed
from vgen_app.db import raw_read, run_db
from vgen_app.services import clientinfo, sessions
from vgen_app.services.accounts import ClientInfo
from vgen_app.services.cookies import token_from_cookie_header
from vgen_app.services.sessions import SessionUser
from vgen_app.ui import routes

T = TypeVar("T")

# How often a page's follower wakes with nothing changed, to see whether its tab is still open.
FOLLOW_CHECK_S = 30.0


def _always_connected(client_token: str) -> bool:
    return True


# Is this tab's socket still connected to this process? Set by the app's wiring (vgen_app.py),
# which has the socket server; a follower of a closed tab ends at its next check.
tab_connected: Callable[[str], bool] = _always_connected


class _SessionGuard:
    """The session check, as plain methods. Reflex turns every public method defined on a State
    class into an event handler a client can invoke over the socket; these are helpers for the
    handlers, not events, so they live on a plain mixin that Reflex does not register."""

    def client_info(self: SessionState) -> ClientInfo:
        headers = dict(self.router.headers.raw_headers)
        return clientinfo.from_request(headers, self.router.session.client_ip or None)

    def page_url(self: SessionState) -> Any:
        """The tab's page address (`.path`, `.query`, `.query_parameters`), read unproxied from
        the router's URL var: `self.router` assembles a whole RouterData on every access and
        the var itself comes wrapped in a MutableProxy (10 and 3 µs against 0.4: a measurable
        part of a busy event, BENCHMARKS.md note 1). Read only."""
        return self.get_value("rx_router_url").href

    def session_token(self: SessionState) -> str | None:
        """This tab's session token, from the HttpOnly cookie of its socket's handshake (read
        from the router's headers var, unproxied: see `page_url`)."""
        return token_from_cookie_header(self.get_value("rx_router_headers").cookie)

    async def current_user(self: SessionState) -> SessionUser | None:
        token = self.session_token()
        user = await run_db(sessions.validate, token) if token else None
        self._set_user(user)
        return user

    async def current_user_and(
        self: SessionState, read: Callable[..., T], *args: Any
    ) -> tuple[SessionUser | None, T | None]:
        """The session check and one read-only service for that user (`read(db, user_id, *args)`)
        in one database call: one thread hop and one session per event. The read runs only for a
        live session; without one the result is None."""
        if not getattr(read, "raw_read", False):
            raise TypeError(f"{read.__name__} is not @raw_read")
        token = self.session_token()
        user, result = await run_db(_check_then_read, token, read, *args) if token else (None, None)
        self._set_user(user)
        return user, result

    async def refresh_user(self: SessionState) -> None:
        """Re-read the header's balance (after a debit, a refund or a credit)."""
        await self.current_user()

    def _set_user(self: SessionState, user: SessionUser | None) -> None:
        if user is None:
            self._put(user_email="", balance=0, authenticated=False, _user_id="")
        else:
            self._put(
                user_email=user.email,
                balance=user.balance,
                authenticated=True,
                _user_id=user.user_id,
            )

    def _put(self: Any, **values: Any) -> None:
        """Set the vars whose value changed, only those: an unchanged var is no delta to send and
        no state to write (the tab holds what the server holds; a reconnect rehydrates it in
        full)."""
        for name, value in values.items():
            if getattr(self, name) != value:
                setattr(self, name, value)


@raw_read
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
    was_signed_in = state.authenticated
    if await state.current_user() is None:
        return state._login_redirect(ended=was_signed_in)
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
    _page: str = ""  # the route this tab shows (see enter_page)
    _follower: str = ""  # the id of this tab's running `follow`, "" when none
    # A page's state names its route: what the page shows is forgotten when the tab leaves it.
    PAGE: ClassVar[str] = ""

    @rx.var
    def balance_label(self) -> str:
        return f"{self.balance:,}"

    def _login_redirect(self, ended: bool = False) -> rx.event.EventSpec:
        """To the login page, back here after it; `ended`: this tab was signed in (the login
        page then says the session has ended)."""
        path = self.router.url.path or "/"
        query = self.router.url.query
        target = path + (f"?{query}" if query else "")
        notice = "&ended=1" if ended else ""
        return rx.redirect(f"{routes.LOGIN}?next={quote(target, safe='')}{notice}")

    @rx.event
    async def enter_page(self):
        """The first `on_load` of every page: the pages this tab has left forget what they showed
        (errors, notices, results). Not the entered page: its own `on_load` resetting its state
        would wipe out a form submitted right after the page loaded."""
        path = _route(self.router.route_id)  # the route pattern, e.g. "/tasks/[task_id]"
        if path == self._page:
            return
        self._page = path
        for state in _page_states(self):  # an event on this state loads all of them (one MGET)
            if state.PAGE != path:
                state.reset()

    @rx.event
    @signed_in
    async def require_login(self):
        """`on_load` of the protected pages with nothing else to load (nor to follow)."""

    async def _on_change(self) -> Any:
        """A page's reaction to a change of its user's data (runs, balance, status), under the
        state's lock, the session already re-checked: reload what the page shows. May return an
        event to send (e.g. start following a run). It runs in the follower's background task,
        whose `self.router` is the one of the event that started it: read the page's own state
        (ids it loaded), never the router."""
        return None

    @rx.event(background=True)
    @signed_in
    async def follow(self):
        """Keep this tab's open page up to date with what changes elsewhere: another tab, the
        generation worker, a payment, an operator. It waits on the user's change feed: no query
        while nothing changes; on a change, the session is re-checked (a block or a reset sends
        the tab to log in), the header's balance and the page reload. One per tab (the newest)."""
        me = uuid.uuid4().hex
        async with self:
            # The newest wins: a page loaded again (maybe by another worker) takes over at once;
            # the one it replaces ends at its next wake-up.
            self._follower = me
            user_id, client_token = self._user_id, self.router.session.client_token
        feed = get_feed()
        seen = feed.version(user_id)
        try:
            while True:
                version = await feed.wait(user_id, seen, FOLLOW_CHECK_S)
                if not tab_connected(client_token):
                    return
                if version == seen:  # nothing changed: still this tab's follower?
                    async with self:
                        if self._follower != me:
                            return
                    continue
                seen = version
                async with self:
                    if self._follower != me:
                        return
                    was_signed_in = self.authenticated
                    user = await self.current_user()
                    if user is None or user.user_id != user_id:
                        to_login, then = self._login_redirect(ended=was_signed_in), None
                    else:
                        to_login, then = None, await self._page_on_change()
                if to_login is not None:
                    yield to_login
                    return
                if then is not None:
                    yield then
        finally:
            async with self:
                if self._follower == me:
                    self._follower = ""

    async def _page_on_change(self) -> Any:
        for state in _page_states(self):
            if state.PAGE == self._page:
                return await state._on_change()
        return None

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
            f".finally(() => window.location.assign({json.dumps(routes.LOGIN + '?logged_out=1')}))"
        )


def _route(pattern: str) -> str:
    """The page's route as `ui/routes.py` writes it (Reflex calls the home page "/index")."""
    pattern = pattern.rstrip("/")
    return "/" if pattern in ("", "/index") else pattern


def _page_states(state: rx.State) -> list[rx.State]:
    """Every state below `state` in its tree that serves a page (has a PAGE)."""
    found = []
    for sub in state.substates.values():
        if sub.PAGE:
            found.append(sub)
        found.extend(_page_states(sub))
    return found
