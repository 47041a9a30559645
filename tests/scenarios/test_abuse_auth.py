"""Issue H: auth abuse and "no session" (SPEC §1), in-process on SQLite and PostgreSQL.

1. Every event handler of every UI state, found by walking the rx.State subclasses of vgen_app.ui,
   called with no cookie, a forged one, and a session that was logged out, blocked (and unblocked
   again), ended by a password reset, or has expired: no user data lands on the state or in what
   the handler returns, nothing is written, and it sends the tab to /login (or refuses).
   Handlers that are public by design are listed in PUBLIC: a new handler fails until classified.
2. Password brute force through the login handler the page uses: the limit engages at the
   configured count, even the right password is refused until the window passes, and concurrent
   attempts get no more password checks than the limit (they used to: all 30 of 30).
3. Account enumeration: login, sign-up and reset request answer alike (message and state) for known
   and unknown addresses, and run the same bcrypt work on both paths (counted, and timed as a figure).
4. Session cookie flags beyond tests/test_app.py; 5. links through the pages (reuse and expiry at
   the service level are tests/test_accounts.py's).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
import re
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Self
from urllib.parse import quote

import bcrypt
import pytest
import reflex as rx
import wrapt
from sqlalchemy import event as sa_event
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel
from starlette.testclient import TestClient

from tests.helpers import ingest, login_session, make_user, token_of, ui_state
from vgen_app import clock
from vgen_app.adapters import mail
from vgen_app.adapters.payments import get_payments
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope, with_db
from vgen_app.services import accounts, billing, ledger, sessions, tasks

ORIGIN = "http://localhost:3000"
PW = "correct horse"
ATTACKER = "attacker@example.net"


# --- states as a socket gives them -------------------------------------------------------------


async def _collect(result: Any) -> list[Any]:
    if hasattr(result, "__aiter__"):
        return [e async for e in result if e is not None]
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return []
    return [e for e in result if e is not None] if isinstance(result, list | tuple) else [result]


def _js(events: list[Any]) -> str:
    """The events as text (function addresses dropped: equal events compare equal)."""
    return re.sub(r" at 0x[0-9a-f]+", "", " ".join(str(e) for e in events))


class _BackgroundProxy(wrapt.ObjectProxy):
    """What a background handler gets as `self`: `async with self` (here: no lock to take)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _call(state: Any, name: str, *args: Any) -> list[Any]:
    owner = next(c for c in type(state).__mro__ if name in getattr(c, "event_handlers", {}))
    handler = owner.event_handlers[name]
    target = _BackgroundProxy(state) if handler.is_background else state
    return await _collect(handler.fn(target, *args))


def _run(state: Any, name: str, *args: Any) -> list[Any]:
    """One handler call on a fresh event loop; mails it sent in the background are sent."""

    async def go() -> list[Any]:
        events = await _call(state, name, *args)
        await mail.drain()
        return events

    return asyncio.run(go())


_SKIP_VARS = ("router", "rx_router", "_reflex", "is_hydrated")


def _snapshot(state: Any) -> dict[str, str]:
    """Every field (backend ones too) and computed var of the state, as text."""
    cls = type(state)
    names = set(cls.__fields__) | set(cls.vars)
    snap = {}
    for name in sorted(n for n in names if not n.startswith(_SKIP_VARS)):
        try:
            snap[name] = repr(getattr(state, name))
        except Exception as exc:  # noqa: BLE001 - a var that cannot be read holds no data either
            snap[name] = f"<{type(exc).__name__}>"
    return snap


def _db_fingerprint() -> dict[str, list[str]]:
    """Every row of every table: a handler that must refuse writes nothing at all."""
    with session_scope() as db:
        return {
            table.name: sorted(repr(tuple(row)) for row in db.exec(sa_select(table)).all())
            for table in SQLModel.metadata.sorted_tables
            if table.name != "leases"
        }


# --- 1. the handler census -------------------------------------------------------------------------


def ui_states() -> list[type]:
    """Every rx.State subclass defined in the vgen_app.ui package (all its modules imported)."""
    import vgen_app.ui as ui_pkg

    for module in pkgutil.iter_modules(ui_pkg.__path__):
        importlib.import_module(f"vgen_app.ui.{module.name}")
    found: dict[str, type] = {}

    def walk(cls: type) -> None:
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("vgen_app.ui"):
                found[f"{sub.__module__}.{sub.__qualname__}"] = sub
            walk(sub)

    walk(rx.State)
    return [found[k] for k in sorted(found)]


def _key(cls: type, name: str) -> str:
    return "*.setvar" if name == "setvar" else f"{cls.__name__}.{name}"


def ui_handlers() -> list[tuple[type, str]]:
    return [(cls, name) for cls in ui_states() for name in sorted(cls.event_handlers)]


# Public by design: they serve people without a session and read no one's data.
PUBLIC = {
    "*.setvar": "Reflex's generic setter: only vars with a setter, and these states have none "
    "but is_hydrated (checked below)",
    "SessionState.redirect_if_logged_in": "on_load of the auth pages",
    "SessionState.logout": "forgets this tab's identity and calls the logout route",
    "SignupState.submit": "sign-up",
    "LoginState.on_load": "the login page",
    "LoginState.submit": "login",
    "VerifyState.on_load": "activation link",
    "ForgotState.on_load": "the forgot-password page",
    "ForgotState.submit": "reset request",
    "ResetState.on_load": "reset link",
    "ResetState.submit": "new password through a reset link",
}
# Touch only this tab's UI, no user data.
UI_ONLY = {
    "TaskState.upload_progress": "moves this tab's upload progress bar",
    "ProbeState.noop": "the benchmarks' floor: writes the caller's number into its own int",
}
# Read or change a user's data: must check the session.
GUARDED = {
    "SessionState.require_login",
    "DashboardState.on_load",
    "DashboardState.go_to_page",
    "NewTaskState.create",
    "TaskState.on_load",
    "TaskState.watch",
    "TaskState.run",
    "TaskState.upload_slot",
    "TokensState.on_load",
    "TokensState.go_to_page",
    "TokensState.buy",
    "PaymentSuccessState.on_load",
    "PaymentSuccessState.wait_for_credit",
    "TestCheckoutState.on_load",
    "TestCheckoutState.pay",
}


def test_every_handler_is_classified() -> None:
    """A handler added to any UI state fails here until it is put in PUBLIC, UI_ONLY or GUARDED
    (and the next test then holds it to that)."""
    keys = {_key(cls, name) for cls, name in ui_handlers()}
    classified = set(PUBLIC) | set(UI_ONLY) | GUARDED
    assert keys - classified == set(), "classify these handlers (PUBLIC, UI_ONLY or GUARDED)"
    assert classified - keys == set(), "these classified handlers no longer exist"
    for cls in ui_states():
        # setvar can only reach vars with a setter: none of ours (auto setters are off).
        setters = {a for a in dir(cls) if a.startswith("set_") and a != "setvar"}
        assert setters <= {"set_is_hydrated"}, (cls.__name__, setters)
        # The guard's helpers are plain methods, not events a client could invoke by name.
        assert not {"current_user", "client_info"} & set(cls.event_handlers), cls.__name__


KINDS = (
    "no cookie",
    "forged cookie",
    "logged out",
    "blocked",
    "blocked, then unblocked",
    "password reset",
    "expired",
)
REVOKED = KINDS[2:]


@dataclass
class Victim:
    """A user with data on every page, and a session that a scenario then ends."""

    kind: str
    email: str
    user_id: str
    token: str
    task_id: str
    task_name: str
    files: tuple[str, str]
    balance: int
    checkout_id: str
    secrets: list[str] = field(default_factory=list)

    @property
    def cookie(self) -> str:
        return f"theme=dark; vgen_session={self.token}"


@pytest.fixture
def victims(
    database_url: str, samples: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Victim]:
    from vgen_app.adapters import storage as storage_mod

    monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path / 'storage'}")
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "spool"))
    reset_settings()
    storage_mod._cache.clear()
    out = {}
    with session_scope() as db:
        for i, kind in enumerate(REVOKED):
            email = f"victim{i}@example.com"
            user_id = make_user(db, email)
            balance = 7_651 + i
            ledger.change_balance(db, user_id, balance, "topup")
            name = f"Secret plan {i}x{user_id[-6:]}"
            task = tasks.create_task(db, user_id, "lipsync", name)
            files = (f"victim{i}-face-{user_id[-6:]}.mp4", f"victim{i}-voice-{user_id[-6:]}.m4a")
            ingest(user_id, task.id, "video", samples["video"], files[0])
            ingest(user_id, task.id, "audio", samples["audio"], files[1])
            checkout = billing.start_checkout(db, user_id, "70k", get_payments())
            token = login_session(db, email)
            v = Victim(kind, email, user_id, token, task.id, name, files, balance, checkout.id)
            # What must never reach a tab without a live session. (The task and checkout ids are
            # not here: the attacker typed them into the URL.)
            v.secrets = [email, user_id, name, *files, f"{balance:,}"]
            out[kind] = v
    return out


def _revoke(v: Victim) -> None:
    with session_scope() as db:
        if v.kind == "logged out":
            assert sessions.revoke(db, v.token)  # what POST /api/auth/logout does
        elif v.kind == "blocked":
            accounts.set_status(db, v.user_id, "blocked")
        elif v.kind == "blocked, then unblocked":  # the block revoked the session for good
            accounts.set_status(db, v.user_id, "blocked")
            accounts.set_status(db, v.user_id, "activated")
        elif v.kind == "password reset":
            link = token_of(accounts.request_password_reset(db, v.email).mails[0])
            accounts.reset_password(db, link, "a brand new password")
        elif v.kind == "expired":
            clock.travel(timedelta(days=get_settings().session_ttl_days, seconds=1))


def _revoke_all(victims: dict[str, Victim]) -> None:
    for kind in REVOKED:  # "expired" last: its clock travel must not hide the others' revocation
        _revoke(victims[kind])
    with session_scope() as db:
        for v in victims.values():
            assert sessions.validate(db, v.token) is None, v.kind


def _cookie(kind: str, victims: dict[str, Victim]) -> str:
    if kind == "no cookie":
        return ""
    if kind == "forged cookie":
        return "vgen_session=" + "A" * 43
    return victims[kind].cookie


def _path(cls: type, v: Victim) -> str:
    return {
        "DashboardState": "/",
        "NewTaskState": "/tasks/new",
        "TaskState": f"/tasks/{v.task_id}",
        "TokensState": "/tokens",
        "PaymentSuccessState": f"/tokens/success?session_id={v.checkout_id}",
        "TestCheckoutState": f"/checkout/test?session_id={v.checkout_id}",
        "SignupState": "/signup",
        "LoginState": "/login",
        "VerifyState": "/verify?token=bogus",
        "ForgotState": "/forgot",
        "ResetState": "/reset?token=bogus",
        "CheckEmailState": "/check-email",
    }.get(cls.__name__, "/tokens")


async def _chunks(src: Path, filename: str) -> AsyncIterator[Any]:
    yield SimpleNamespace(filename=filename, data=src.read_bytes())


# Arguments a real client would send (made so that a missing guard would change data).
ARGS: dict[str, Callable[[Victim, dict[str, Path]], tuple]] = {
    "*.setvar": lambda v, s: ("is_hydrated", True),
    "SignupState.submit": lambda v, s: ({"email": ATTACKER, "password": "attacker pw 1"},),
    "LoginState.submit": lambda v, s: ({"email": v.email, "password": "a wrong guess"},),
    "ForgotState.submit": lambda v, s: ({"email": ATTACKER},),
    "ResetState.submit": lambda v, s: (
        {"password": "new password 9", "confirm": "new password 9"},
    ),
    "DashboardState.go_to_page": lambda v, s: (1,),
    "TokensState.go_to_page": lambda v, s: (1,),
    "NewTaskState.create": lambda v, s: ({"model": "lipsync", "name": "attacker task"},),
    "TokensState.buy": lambda v, s: ("10k",),
    "TaskState.upload_progress": lambda v, s: ({"progress": 0.5}, "video"),
    "TaskState.upload_slot": lambda v, s: (_chunks(s["video"], "evil.mp4"), "video"),
    "ProbeState.noop": lambda v, s: (7,),
}


def _args(cls: type, name: str, v: Victim, samples: dict[str, Path]) -> tuple:
    key = _key(cls, name)
    if key in ARGS:
        return ARGS[key](v, samples)
    params = list(inspect.signature(cls.event_handlers[name].fn).parameters)[1:]
    if params:
        pytest.fail(f"{key} takes {params}: add what a client would send to ARGS")
    return ()


@dataclass
class Case:
    kind: str
    cls: type
    name: str
    state: Any
    before: dict[str, str] = field(default_factory=dict)


def test_no_handler_serves_or_changes_data_without_a_live_session(
    victims: dict[str, Victim],
    samples: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    figure: Callable[[str], None],
) -> None:
    from vgen_app.ui import tasks as tasks_ui

    monkeypatch.setattr(tasks_ui, "WATCH_SECONDS", 0)
    handlers = ui_handlers()
    target = victims["logged out"]  # whose ids the cookie-less attacker puts in the URLs
    secrets = [s for v in victims.values() for s in v.secrets]
    outcomes = {"redirected to /login": 0, "refused (no events)": 0, "public answer": 0}

    async def scenario() -> None:
        # A tab per (cookie kind, handler). With a session that is revoked later, the tab first
        # loads its page while the session is live: the handler then runs on a stale tab.
        cases = []
        for kind in KINDS:
            v = victims.get(kind, target)
            for cls, name in handlers:
                key = _key(cls, name)
                state = ui_state(cls, _path(cls, v), _cookie(kind, victims))
                if kind in REVOKED and key not in PUBLIC and hasattr(state, "current_user"):
                    assert await state.current_user() is not None, (kind, key)
                    if f"{cls.__name__}.on_load" in GUARDED:
                        await _call(state, "on_load")
                    assert state.authenticated and state.user_email == v.email
                cases.append(Case(kind, cls, name, state))
        _revoke_all(victims)

        for case in cases:
            key = _key(case.cls, case.name)
            v = victims.get(case.kind, target)
            state = case.state
            before, rows_before = _snapshot(state), _db_fingerprint()
            events = await _call(state, case.name, *_args(case.cls, case.name, v, samples))
            after, js = _snapshot(state), _js(events)
            where = f"{key} with {case.kind}"

            # A guarded handler forgets the stale identity; the others never set one.
            if key in GUARDED:
                assert (state.user_email, state.balance, state.authenticated) == ("", 0, False)
                assert state._user_id == "", where
            else:
                for var in ("user_email", "balance", "authenticated", "_user_id"):
                    assert before.get(var) == after.get(var), (where, var)
            # Nothing of anyone's data newly on the state or in the events.
            changed = {k: after[k] for k in after if before.get(k) != after[k]}
            for secret in secrets:
                assert secret not in js, (where, secret, js)
                leaked = [k for k, text in changed.items() if secret in text]
                assert not leaked, (where, secret, leaked)
            if key in PUBLIC:
                outcomes["public answer"] += 1
                continue
            # Nothing written: no task, upload, run, checkout, payment, balance change.
            assert _db_fingerprint() == rows_before, where
            if key in UI_ONLY:
                outcomes["refused (no events)"] += 1
                continue
            if "/login?next=" in js:
                assert f"/login?next={quote(_path(case.cls, v), safe='')}" in js, (where, js)
                outcomes["redirected to /login"] += 1
            else:
                # Only a background task may just stop (its page's on_load redirected already).
                assert case.cls.event_handlers[case.name].is_background, (where, js)
                assert events == [], (where, js)
                outcomes["refused (no events)"] += 1
        await mail.drain()

    asyncio.run(scenario())
    calls = len(handlers) * len(KINDS)
    figure(
        f"{len(handlers)} handlers ({len(GUARDED)} guarded, {len(PUBLIC)} public, "
        f"{len(UI_ONLY)} UI-only) x {len(KINDS)} cookie kinds ({', '.join(KINDS)}) = {calls} "
        f"calls: {outcomes['redirected to /login']} redirected to /login, "
        f"{outcomes['refused (no events)']} refused, {outcomes['public answer']} public answers; "
        "user data leaked: 0, rows written by a guarded handler: 0"
    )


def test_download_route_refuses_every_dead_session(
    asgi_app: Any, victims: dict[str, Victim], figure: Callable[[str], None]
) -> None:
    """The one /api route that serves user data: 401 (never 404, which would confirm the run)."""
    _revoke_all(victims)
    statuses = []
    with TestClient(asgi_app, base_url=ORIGIN) as client:
        for kind in KINDS:
            client.cookies.clear()
            for part in filter(None, _cookie(kind, victims).split("; ")):
                name, _, value = part.partition("=")
                client.cookies.set(name, value)
            for run_id in ("run-that-exists-or-not", victims["logged out"].task_id):
                response = client.get(f"/api/runs/{run_id}/result")
                statuses.append(response.status_code)
                assert response.status_code == 401, (kind, response.status_code)
                assert not any(s in response.text for v in victims.values() for s in v.secrets)
    figure(f"GET /api/runs/<id>/result x {len(KINDS)} cookie kinds x 2 ids: all {set(statuses)}")


def test_payment_wait_stops_when_the_session_is_revoked_meanwhile(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The success page polls for the webhook; a logout elsewhere during the wait ends it on the
    login page instead of polling on and showing the payment to a tab with no session."""
    from vgen_app.ui import tokens as tokens_ui
    from vgen_app.ui.tokens import PaymentSuccessState

    with session_scope() as db:
        user_id = make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
        checkout = billing.start_checkout(db, user_id, "10k", get_payments())
    polls = []
    real = billing.checkout_for_user

    def poll_then_logout(db: Any, session_id: str, uid: str) -> Any:
        polls.append(session_id)
        if len(polls) == 1:
            sessions.revoke(db, token)  # logged out in another tab after the first poll
        return real(db, session_id, uid)

    monkeypatch.setattr(tokens_ui.billing, "checkout_for_user", poll_then_logout)
    state = ui_state(
        PaymentSuccessState, f"/tokens/success?session_id={checkout.id}", f"vgen_session={token}"
    )
    events = _run(state, "on_load")
    assert state.authenticated and events  # the wait is started
    events = _run(state, "wait_for_credit")
    assert len(polls) == 1 and "/login?next=" in _js(events)
    assert (state.authenticated, state.payment_status, state.payment_tokens) == (
        False,
        "waiting",
        "",
    )


@pytest.mark.parametrize("handler", ["upload_slot", "watch"])
def test_background_task_handlers_send_a_dead_session_to_login(
    database_url: str, monkeypatch: pytest.MonkeyPatch, handler: str
) -> None:
    from vgen_app.ui import tasks as tasks_ui
    from vgen_app.ui.tasks import TaskState

    monkeypatch.setattr(tasks_ui, "WATCH_SECONDS", 0)
    with session_scope() as db:
        user_id = make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
        task = tasks.create_task(db, user_id, "lipsync", "My clip")
    state = ui_state(TaskState, f"/tasks/{task.id}", f"vgen_session={token}")
    _run(state, "on_load")
    assert state.authenticated
    with session_scope() as db:
        sessions.revoke(db, token)  # logged out in another tab
    args = (_chunks_of(b"not a video", "clip.mp4"), "video") if handler == "upload_slot" else ()
    events = _run(state, handler, *args)
    assert not state.authenticated and not state.uploading.get("video")
    assert f"/login?next={quote(f'/tasks/{task.id}', safe='')}" in _js(events)


async def _chunks_of(data: bytes, filename: str) -> AsyncIterator[Any]:
    yield SimpleNamespace(filename=filename, data=data)


# --- 2. password brute force through the login handler ---------------------------------------------


def _login(email: str, password: str, ip: str) -> tuple[Any, list[Any]]:
    from vgen_app.ui.auth import LoginState

    state = ui_state(LoginState, "/login?next=/tokens", ip=ip)
    events = _run(state, "submit", {"email": email, "password": password})
    return state, events


def _logged_in(events: list[Any]) -> bool:
    return "/api/auth/session?ticket=" in _js(events)


@pytest.mark.parametrize("configured", [None, 3])
def test_brute_force_per_email_through_the_login_page(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    figure: Callable[[str], None],
    configured: int | None,
) -> None:
    if configured:
        monkeypatch.setenv("LOGIN_MAX_FAILURES_PER_EMAIL", str(configured))
        reset_settings()
    settings = get_settings()
    limit, window = settings.login_max_failures_per_email, settings.login_failure_window_minutes
    with session_scope() as db:
        make_user(db, "ann@example.com")
    attempts = 0
    while True:  # a botnet: every guess from another address, so only the per-e-mail limit counts
        attempts += 1
        state, events = _login("ann@example.com", f"guess {attempts}", f"10.7.{attempts}.1")
        assert not _logged_in(events)
        if state.login_error.startswith("Too many failed attempts for this e-mail"):
            break
        assert state.login_error == accounts.WRONG_CREDENTIALS
        assert attempts <= limit, "the limit never engaged"
    assert attempts == limit + 1  # `limit` guesses were checked, the next one is refused

    state, events = _login("ann@example.com", PW, "10.8.0.1")  # the right password, too late
    assert not _logged_in(events)
    assert f"Try again in {window} minutes" in state.login_error
    clock.travel(timedelta(minutes=window - 1))
    state, events = _login("ann@example.com", PW, "10.8.0.2")
    assert not _logged_in(events) and "Try again in 1 minute," in state.login_error
    clock.travel(timedelta(minutes=1, seconds=1))
    state, events = _login("ann@example.com", PW, "10.8.0.3")
    assert _logged_in(events) and state.login_error == ""
    figure(
        f"per e-mail (configured {limit}): {attempts - 1} wrong passwords checked, attempt "
        f"{attempts} refused; the right password refused at +0 and +{window - 1} min, "
        f"accepted at +{window} min 1 s"
    )


def test_brute_force_per_ip_through_the_login_page(
    database_url: str, figure: Callable[[str], None]
) -> None:
    settings = get_settings()
    limit, window = settings.login_max_failures_per_ip, settings.login_failure_window_minutes
    with session_scope() as db:
        make_user(db, "ann@example.com")
    attacker = "203.0.113.66"
    attempts = 0
    while True:  # one address spraying one password over many accounts
        attempts += 1
        email = "ann@example.com" if attempts % 7 == 0 else f"user{attempts}@example.com"
        state, events = _login(email, "Summer2024!", attacker)
        assert not _logged_in(events)
        if state.login_error.startswith("Too many failed attempts from your network"):
            break
        assert state.login_error == accounts.WRONG_CREDENTIALS
        assert attempts <= limit, "the limit never engaged"
    assert attempts == limit + 1
    state, events = _login("ann@example.com", PW, attacker)
    assert not _logged_in(events) and "from your network" in state.login_error
    _, events = _login("ann@example.com", PW, "198.51.100.4")  # her own network is unaffected
    assert _logged_in(events)
    clock.travel(timedelta(minutes=window, seconds=1))
    _, events = _login("ann@example.com", PW, attacker)
    assert _logged_in(events)
    figure(
        f"per IP (configured {limit}): {attempts - 1} wrong passwords over "
        f"{attempts - 1} e-mails checked, attempt {attempts} refused; other IPs unaffected; "
        f"accepted again after {window} min"
    )


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    """Every bcrypt check and hash, with the cost it ran at (b"$2b$04$" ...)."""
    calls: list[tuple[str, bytes]] = []
    real_check, real_hash = bcrypt.checkpw, bcrypt.hashpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(("check", hashed[:7]))
        return real_check(password, hashed)

    def hashpw(password: bytes, salt: bytes) -> bytes:
        calls.append(("hash", salt[:7]))
        return real_hash(password, salt)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    monkeypatch.setattr(bcrypt, "hashpw", hashpw)
    return calls


def test_concurrent_guesses_get_no_more_checks_than_the_limit(
    database_url: str, bcrypt_calls: list, figure: Callable[[str], None]
) -> None:
    """Many tabs (or sockets) guessing at once. The limit used to be checked before the failure
    was recorded, so concurrent guesses all passed it: 30 of 30 got a password check at bcrypt
    cost 10 (15 of 30 at cost 4). Now each attempt is recorded before it is counted."""
    from vgen_app.ui.auth import LoginState

    limit = get_settings().login_max_failures_per_email
    with session_scope() as db:
        make_user(db, "ann@example.com")
    bcrypt_calls.clear()
    n = 30

    async def guess(i: int) -> Any:
        state = ui_state(LoginState, "/login", ip=f"10.9.{i}.1")
        await _call(state, "submit", {"email": "ann@example.com", "password": f"guess {i}"})
        return state.login_error

    async def storm() -> list[str]:
        return await asyncio.gather(*(guess(i) for i in range(n)))

    errors = asyncio.run(storm())
    checks = [c for c in bcrypt_calls if c[0] == "check"]
    refused = sum(e.startswith("Too many failed attempts") for e in errors)
    assert len(checks) <= limit, f"{len(checks)} password checks for a limit of {limit}"
    assert errors.count(accounts.WRONG_CREDENTIALS) == len(checks)
    assert refused == n - len(checks)
    # Attempts that all land at once may even refuse each other (fail closed): then fewer than
    # `limit` failures are on record and the right password still gets in.
    _, events = _login("ann@example.com", PW, "10.10.0.1")
    assert _logged_in(events) is (len(checks) < limit)
    figure(
        f"{n} concurrent wrong passwords for one e-mail (limit {limit}): {len(checks)} password "
        f"checks, {refused} refused (before the fix: all {n} checked)"
    )


# --- 3. account enumeration ----------------------------------------------------------------------


def _people(db: Any) -> dict[str, str]:
    """One address of every kind an attacker might probe."""
    make_user(db, "active@example.com")
    accounts.signup(db, "new@example.com", PW)  # never activated
    blocked = make_user(db, "blocked@example.com")
    accounts.set_status(db, blocked, "blocked")
    return {
        "activated": "active@example.com",
        "new": "new@example.com",
        "blocked": "blocked@example.com",
        "unknown": "nobody@example.com",
    }


def _generic(text: str, email: str) -> str:
    return text.replace(quote(email, safe=""), "<email>").replace(email, "<email>")


def test_login_answers_alike_and_checks_a_hash_for_every_address(
    database_url: str, bcrypt_calls: list, figure: Callable[[str], None]
) -> None:
    """One bcrypt check on every path, also the first time (the unknown path's dummy hash used
    to be hashed on first use: two bcrypt rounds for the first unknown address of a worker)."""
    from vgen_app.services import security
    from vgen_app.ui.auth import LoginState

    security._dummy_hash.cache_clear()  # as in a fresh worker

    with session_scope() as db:
        people = _people(db)
    answers, work = {}, {}
    for who, email in people.items():
        bcrypt_calls.clear()
        state = ui_state(LoginState, "/login", ip=f"10.11.{len(answers)}.1")
        events = _run(state, "submit", {"email": email, "password": "wrong guess"})
        answers[who] = (state.login_error, _generic(_js(events), email), _snapshot(state))
        work[who] = list(bcrypt_calls)
    assert answers["activated"][0] == accounts.WRONG_CREDENTIALS
    assert all(a == answers["activated"] for a in answers.values()), answers
    # The same expensive work: one bcrypt check, at the same cost, known address or not.
    assert all(w == work["activated"] for w in work.values()), work
    assert [c for c, _ in work["unknown"]] == ["check"]
    assert work["unknown"][0][1] == f"$2b${get_settings().bcrypt_rounds:02d}$".encode()
    # The lockout is per address whether or not it exists: no enumeration through it either.
    locked = set()
    for who, email in people.items():
        for i in range(get_settings().login_max_failures_per_email + 1):
            state, _ = _login(email, f"guess {i}", f"10.12.{i}.{len(locked) + 1}")
        locked.add(state.login_error)
    assert len(locked) == 1 and next(iter(locked)).startswith("Too many failed attempts")
    figure(
        f"login with a wrong password for {len(people)} kinds of address ({', '.join(people)}): "
        f"1 answer, 1 state; bcrypt per attempt: {work['unknown']} on every path; "
        "the lockout message after the limit: 1 for all"
    )


def test_signup_answers_alike_and_hashes_for_every_address(
    database_url: str, bcrypt_calls: list, figure: Callable[[str], None]
) -> None:
    from vgen_app.ui.auth import SignupState

    with session_scope() as db:
        people = _people(db)
    answers, work = {}, {}
    for who, email in people.items():
        bcrypt_calls.clear()
        state = ui_state(SignupState, "/signup", ip=f"10.13.{len(answers)}.1")
        events = _run(state, "submit", {"email": email, "password": "some password"})
        answers[who] = (state.signup_error, _generic(_js(events), email))
        snap = _snapshot(state)
        answers[who] += (snap,)
        work[who] = list(bcrypt_calls)
    assert "/check-email?email=<email>" in answers["unknown"][1]
    assert all(a == answers["unknown"] for a in answers.values()), answers
    assert all(w == work["unknown"] for w in work.values()), work
    assert [c for c, _ in work["unknown"]] == ["hash"]
    figure(
        f"sign-up with {len(people)} kinds of address ({', '.join(people)}): 1 answer "
        f"(-> /check-email), 1 state; bcrypt per attempt: {work['unknown']} on every path"
    )


@pytest.fixture
def sql_log(database_url: str) -> Iterator[list[str]]:
    """The SQL statements the app runs (text only), while the test records them."""
    from vgen_app.db import get_engine

    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = get_engine()
    sa_event.listen(engine, "before_cursor_execute", record)
    yield statements
    sa_event.remove(engine, "before_cursor_execute", record)


def test_reset_request_answers_alike_for_every_address(
    database_url: str,
    bcrypt_calls: list,
    sql_log: list[str],
    monkeypatch: pytest.MonkeyPatch,
    figure: Callable[[str], None],
) -> None:
    """Same answer, and the same work before it: the page answers after the part of the request
    that is alike for every address; the link (or nothing) is made after the answer. It used to
    be made before, so an unknown address answered in about half the time of a known one (see
    test_enumeration_timing_figure)."""
    from vgen_app.ui.auth import ForgotState

    with session_scope() as db:
        people = _people(db)
    answers, work, later = {}, {}, []
    real = accounts.reset_link_mails

    def after_the_answer(db: Any, email: str) -> Any:
        later.append((email, state.forgot_done))  # what the page showed when this began
        return real(db, email)

    monkeypatch.setattr(accounts, "reset_link_mails", after_the_answer)

    async def ask(email: str) -> tuple:
        events = await _call(state, "submit", {"email": email})
        before_answer = list(sql_log)
        await mail.drain()
        answer = (
            state.forgot_error,
            _generic(state.forgot_done, email),
            _generic(_js(events), email),
        )
        return answer, before_answer

    for who, email in people.items():
        state = ui_state(ForgotState, "/forgot", ip="10.14.0.1")
        bcrypt_calls.clear()
        sql_log.clear()
        answers[who], statements = asyncio.run(ask(email))
        work[who] = (list(bcrypt_calls), statements)
    assert answers["unknown"][1] == accounts.RESET_SENT.format(email="<email>")
    assert all(a == answers["unknown"] for a in answers.values()), answers
    # The same SQL, and no bcrypt, before the answer on every path.
    assert all(w == work["unknown"] for w in work.values()), work
    # The account-dependent part ran for each, after the answer was on the page.
    assert [email for email, _ in later] == list(people.values())
    assert all(shown.startswith("If an account exists for ") for _, shown in later)
    # And it did its job: a reset link to the activated account, nothing to the others (the
    # `new` one had its activation link a moment ago: throttled).
    sent = [p.read_text() for p in get_settings().mail_outbox_dir.glob("*.eml")]
    resets = [t for t in sent if "X-Vgen-Kind: reset" in t]
    assert len(resets) == 1 and "To: active@example.com" in resets[0]
    figure(
        f"reset request for {len(people)} kinds of address: 1 answer; before it, the same "
        f"{len(work['unknown'][1])} SQL statements and no bcrypt on every path; the link (1 mail, "
        "to the activated account) made after the answer"
    )


def test_signup_with_a_taken_address_cannot_flood_its_inbox(database_url: str) -> None:
    """Each sign-up with an activated address mailed its owner a notice: a mail bomb at the rate
    limit per IP, unbounded from many IPs. Now at most one such mail per address per interval."""
    interval = get_settings().mail_link_interval_seconds
    with session_scope() as db:
        make_user(db, "ann@example.com")
        kinds = []
        for i in range(10):
            result = accounts.signup(
                db, "ann@example.com", "x password", accounts.ClientInfo(ip=f"10.15.{i}.1")
            )
            assert result.message == accounts.CHECK_INBOX.format(email="ann@example.com")
            kinds += [m.kind for m in result.mails]
        assert kinds == ["already_registered"]
        clock.travel(timedelta(seconds=interval + 1))
        again = accounts.signup(db, "ann@example.com", "x password")
        assert [m.kind for m in again.mails] == ["already_registered"]


def _answer_ms(cls: type, path: str, form: dict[str, str], ip: str) -> float:
    """How long the page takes to answer one submit (what an attacker can time)."""

    async def go() -> float:
        state = ui_state(cls, path, ip=ip)
        start = time.perf_counter()
        await _call(state, "submit", form)
        elapsed = (time.perf_counter() - start) * 1000
        await mail.drain()
        return elapsed

    return asyncio.run(go())


def _service_ms(fn: Callable[..., Any], *args: Any) -> float:
    start = time.perf_counter()
    with_db(fn, *args)
    return (time.perf_counter() - start) * 1000


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_enumeration_timing_figure(
    database_url: str, monkeypatch: pytest.MonkeyPatch, figure: Callable[[str], None]
) -> None:
    """Known vs unknown address, through the pages' handlers at a realistic bcrypt cost.
    Printed as a figure, never asserted (the structural checks are the tests above)."""
    from vgen_app.ui.auth import ForgotState, LoginState, SignupState

    monkeypatch.setenv("BCRYPT_ROUNDS", "10")
    reset_settings()
    with session_scope() as db:
        make_user(db, "known@example.com")
    fresh = iter(range(10_000))
    # (repetitions, probe): fewer of the bcrypt-bound ones, many of the fast ones (noisier).
    probes = {
        "login": (
            15,
            lambda email: _answer_ms(
                LoginState, "/login", {"email": email, "password": "wrong password"}, "10.16.0.1"
            ),
        ),
        "signup": (
            15,
            lambda email: _answer_ms(
                SignupState, "/signup", {"email": email, "password": "some password"}, "10.16.0.2"
            ),
        ),
        "reset request": (
            51,
            lambda email: _answer_ms(ForgotState, "/forgot", {"email": email}, "10.16.0.3"),
        ),
        # What the reset page used to wait for: the whole request, link included.
        "reset request before the fix": (
            51,
            lambda email: _service_ms(
                accounts.request_password_reset, email, accounts.ClientInfo(ip="10.16.0.4")
            ),
        ),
    }
    results = {}
    for name, (reps, probe) in probes.items():
        known, unknown = [], []
        for _ in range(reps):  # interleaved, each out of every rate limit and mail throttle
            clock.travel(timedelta(hours=1, minutes=1))
            known.append(probe("known@example.com"))
            clock.travel(timedelta(hours=1, minutes=1))
            unknown.append(probe(f"fresh{next(fresh)}@example.com"))
        results[name] = reps, statistics.median(known), statistics.median(unknown)
    figure(
        "page answer time (median), bcrypt cost 10, known vs unknown address: "
        + "; ".join(
            f"{name} {k:.1f} vs {u:.1f} ms (unknown/known {u / k:.2f}x, n={n})"
            for name, (n, k, u) in results.items()
        )
    )


# --- 4. the session cookie -----------------------------------------------------------------------


@pytest.fixture
def client(asgi_app: Any, database_url: str) -> Iterator[TestClient]:
    with TestClient(asgi_app, base_url=ORIGIN) as c:
        yield c


def _ticket(email: str = "ann@example.com") -> str:
    with session_scope() as db:
        make_user(db, email)
        result = accounts.login(db, email, PW)
    assert result.ticket
    return result.ticket


def _attrs(raw: str) -> dict[str, str]:
    """Attributes of one Set-Cookie header, lower-cased names."""
    parts = [p.strip() for p in raw.split(";")]
    return {p.partition("=")[0].lower(): p.partition("=")[2] for p in parts[1:]}


@pytest.fixture(params=["http://localhost:3000", "https://app.vgen.com"])
def app_url_client(
    request: pytest.FixtureRequest,
    asgi_app: Any,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, TestClient]]:
    """The app under APP_URL, set before the app's lifespan starts: its background threads read
    the settings too, and one that started reading before a change could cache the old ones."""
    monkeypatch.setenv("APP_URL", request.param)
    reset_settings()
    with TestClient(asgi_app, base_url=ORIGIN) as c:
        yield request.param, c


def test_session_cookie_flags(
    app_url_client: tuple[str, TestClient], figure: Callable[[str], None]
) -> None:
    """test_app.py checks the http flags and Secure + __Host- on https; here every flag on both,
    the lifetime, the response's caching, and that logout deletes the very same cookie."""
    app_url, client = app_url_client
    assert get_settings().app_url == app_url
    https = app_url.startswith("https")
    name = "__Host-vgen_session" if https else "vgen_session"
    response = client.get(f"/api/auth/session?ticket={_ticket()}", follow_redirects=False)
    raw = response.headers["set-cookie"]
    assert raw.startswith(f"{name}=")
    attrs = _attrs(raw)
    assert "httponly" in attrs and attrs["samesite"].lower() == "lax" and attrs["path"] == "/"
    assert "domain" not in attrs  # host-only: never shared with vgen.com or its other subdomains
    assert ("secure" in attrs) is https
    assert int(attrs["max-age"]) == get_settings().session_ttl_days * 86400
    assert response.headers["cache-control"] == "no-store"
    token = raw.split(";")[0].partition("=")[2]
    assert with_db(sessions.validate, token)

    logout = client.post("/api/auth/logout", headers={"cookie": f"{name}={token}"})
    gone = _attrs(logout.headers["set-cookie"])
    assert logout.headers["set-cookie"].startswith(f"{name}=")
    # A browser only replaces a cookie set with the same name, path and (for __Host-) Secure.
    assert gone["path"] == "/" and ("secure" in gone) is https and "httponly" in gone
    assert gone.get("max-age") == "0" or "expires" in gone
    assert with_db(sessions.validate, token) is None
    figure(
        f"{app_url}: {raw.split('=')[0]}; "
        + "; ".join(f"{k}={v}" if v else k for k, v in attrs.items() if k != "expires")
        + "; Cache-Control: no-store; logout deletes it with the same name, Path and Secure"
    )


def test_https_ignores_a_cookie_without_the_host_prefix(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On https only `__Host-vgen_session` counts: a plain `vgen_session` can be planted by a
    sibling subdomain or over plain http (cookie tossing); the guard must not read it."""
    from vgen_app.ui.session import SessionState

    with session_scope() as db:
        make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
    monkeypatch.setenv("APP_URL", "https://app.vgen.com")
    reset_settings()
    tossed = ui_state(SessionState, "/tokens", f"vgen_session={token}")
    assert "/login" in _js(_run(tossed, "require_login"))
    assert not tossed.authenticated
    real = ui_state(SessionState, "/tokens", f"__Host-vgen_session={token}")
    assert _run(real, "require_login") == [] and real.authenticated


def test_the_session_token_never_reaches_the_browser_state(database_url: str) -> None:
    """HttpOnly keeps the cookie from scripts; the state synced to the tab must not carry it
    either (the socket handshake's headers stay on the server)."""
    from vgen_app.ui.session import SessionState
    from vgen_app.ui.tokens import TokensState

    with session_scope() as db:
        make_user(db, "ann@example.com")
        token = login_session(db, "ann@example.com")
    cookie = f"vgen_session={token}"

    async def synced(state: Any) -> str:
        return repr(await state._get_resolved_delta()) + repr(state.dict())

    texts = []
    for cls, handler in ((SessionState, "require_login"), (TokensState, "on_load")):
        state = ui_state(cls, "/tokens", cookie)
        _run(state, handler)
        assert state.authenticated
        texts.append(asyncio.run(synced(state)))
    assert "ann@example.com" in texts[0]  # the delta is what we think it is
    for text in texts:
        assert token not in text and "vgen_session" not in text


# --- 5. links through the pages -----------------------------------------------------------------------


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
        return token_of(accounts.request_password_reset(db, "ann@example.com").mails[0])

    with session_scope() as db:
        make_user(db, "ann@example.com")
        used, older = link(db), None
    first = page(used)
    submit(first, "first new password")
    assert first.reset_status == "done"
    again = page(used)  # the same link, opened again
    assert again.reset_status == "error" and again.reset_error == accounts.BAD_RESET_LINK

    with session_scope() as db:
        older = link(db)
        newer = link(db)
    assert page(older).reset_status == "error"  # voided by the newer link
    open_form = page(newer)
    assert open_form.reset_status == "form"
    clock.travel(timedelta(hours=get_settings().link_ttl_hours, seconds=1))
    submit(open_form, "second new password")  # the form stayed open past the link's expiry
    assert open_form.reset_status == "error" and open_form.reset_error == accounts.BAD_RESET_LINK
    with session_scope() as db:
        assert login_session(db, "ann@example.com", "first new password")


def test_expired_login_ticket_through_the_session_route(client: TestClient) -> None:
    ticket = _ticket()
    clock.travel(timedelta(seconds=get_settings().login_ticket_ttl_seconds + 1))
    response = client.get(f"/api/auth/session?ticket={ticket}", follow_redirects=False)
    assert response.headers["location"] == f"{ORIGIN}/login?expired=1"
    assert "set-cookie" not in response.headers
