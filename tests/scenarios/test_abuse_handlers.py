"""Issue H: "no session" (SPEC §1) for every UI event handler, in-process on SQLite and PostgreSQL.

Every event handler of every UI state, found by walking the rx.State subclasses of vgen_app.ui,
called with no cookie, a forged one, and a session that was logged out, blocked (and unblocked
again), ended by a password reset, or has expired: no user data lands on the state or in what the
handler returns, nothing is written, and it sends the tab to /login (or refuses). Handlers that are
public by design are listed in PUBLIC: a new handler fails until classified. Also the download
route with every dead session, and the handlers that run on (a payment wait, background tasks)
while their session is revoked.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import pkgutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import pytest
import reflex as rx
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel
from starlette.testclient import TestClient

from tests.helpers import ingest, login_session, make_user, token_of, ui_state
from tests.scenarios.abuse_helpers import ORIGIN, _call, _js, _run, _snapshot
from vgen_app import clock
from vgen_app.adapters import mail
from vgen_app.adapters.payments import get_payments
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope
from vgen_app.services import accounts, billing, ledger, passwords, sessions, tasks

ATTACKER = "attacker@example.net"


def _db_fingerprint() -> dict[str, list[str]]:
    """Every row of every table: a handler that must refuse writes nothing at all."""
    with session_scope() as db:
        return {
            table.name: sorted(repr(tuple(row)) for row in db.exec(sa_select(table)).all())
            for table in SQLModel.metadata.sorted_tables
            if table.name != "leases"
        }


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
    "SessionState.enter_page": "first on_load of every page: this tab's pages it left forget "
    "what they showed",
    "SessionState.check_session": "on_load of the 404 page: this tab's own session, or nothing",
    "SessionState.logout": "forgets this tab's identity and calls the logout route",
    "SignupState.submit": "sign-up",
    "LoginState.on_load": "the login page",
    "LoginState.submit": "login",
    "VerifyState.on_load": "activation link",
    "ForgotState.submit": "reset request",
    "ResetState.on_load": "reset link",
    "ResetState.submit": "new password through a reset link",
    "AccountEmailState.on_load": "the e-mail change link (the link is the proof, not a session)",
}
# Touch only this tab's UI, no user data.
UI_ONLY = {
    "TaskState.upload_progress": "moves this tab's upload progress bar",
    "TaskState.start_rename": "shows this tab's rename field",
    "TaskState.stop_rename": "hides this tab's rename field",
    "ProbeState.noop": "the benchmarks' floor: writes the caller's number into its own int",
}
# Read or change a user's data: must check the session.
GUARDED = {
    "SessionState.require_login",
    "SessionState.follow",
    "DashboardState.on_load",
    "DashboardState.go_to_page",
    "DashboardState.filter_status",
    "DashboardState.filter_model",
    "DashboardState.search_tasks",
    "DashboardState.clear_filters",
    "NewTaskState.create",
    "TaskState.on_load",
    "TaskState.watch",
    "TaskState.run",
    "TaskState.upload_slot",
    "TaskState.rename",
    "TaskState.delete",
    "TaskState.cancel",
    "TokensState.on_load",
    "TokensState.go_to_page",
    "TokensState.buy",
    "PaymentSuccessState.on_load",
    "PaymentSuccessState.wait_for_credit",
    "TestCheckoutState.on_load",
    "TestCheckoutState.pay",
    "TestCheckoutState.refund",
    "TestCheckoutState.dispute",
    "AccountState.on_load",
    "AccountState.change_password",
    "AccountState.change_email",
    "AccountState.toggle_run_mails",
    "AccountState.revoke",
    "AccountState.revoke_others",
    "AccountState.delete_account",
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
            # Paid: its receipt's test-only Refund and Dispute buttons would change data.
            billing.pay_test_checkout(db, checkout.id, user_id, get_payments())
            balance += 70_000
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
            link = token_of(passwords.request_password_reset(db, v.email).mails[0])
            passwords.reset_password(db, link, "a brand new password")
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
    "DashboardState.filter_status": lambda v, s: ("failed",),
    "DashboardState.filter_model": lambda v, s: ("lipsync",),
    "DashboardState.search_tasks": lambda v, s: (v.task_name[:6],),
    "TokensState.go_to_page": lambda v, s: (1,),
    "NewTaskState.create": lambda v, s: ({"model": "lipsync", "name": "attacker task"},),
    "TokensState.buy": lambda v, s: ("10k",),
    "TestCheckoutState.refund": lambda v, s: ("full",),
    "TestCheckoutState.dispute": lambda v, s: ("created",),
    "TaskState.upload_progress": lambda v, s: ({"progress": 0.5}, "video"),
    "TaskState.upload_slot": lambda v, s: (_chunks(s["video"], "evil.mp4"), "video"),
    "TaskState.rename": lambda v, s: ({"name": "renamed by an attacker"},),
    "TaskState.cancel": lambda v, s: ("run-of-" + v.task_id,),
    "ProbeState.noop": lambda v, s: (7,),
    "AccountState.change_password": lambda v, s: (
        {
            "current_password": "a wrong guess",
            "new_password": "attacker pw 1",
            "repeat_password": "attacker pw 1",
        },
    ),
    "AccountState.change_email": lambda v, s: (
        {"new_email": ATTACKER, "email_password": "a wrong guess"},
    ),
    "AccountState.toggle_run_mails": lambda v, s: (False,),
    "AccountState.revoke": lambda v, s: (1,),
    "AccountState.delete_account": lambda v, s: ({"delete_password": "correct horse"},),
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
    from vgen_app.ui import task as tasks_ui

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
    from vgen_app.ui import payment as tokens_ui
    from vgen_app.ui.payment import PaymentSuccessState

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
    from vgen_app.ui import task as tasks_ui
    from vgen_app.ui.task import TaskState

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
