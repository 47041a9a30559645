"""Issue O, the admin audit (SPEC §11): one `admin_audit` row per admin API call, written in the
change's own transaction; `GET /audit` and `GET /users/{userID}/ledger` (paged, filtered);
several admin tokens at once (ADMIN_TOKENS) for a rotation without downtime; refused calls as
rows, capped per minute; the database unreachable answered 503 with Retry-After; migration 0008
up and down. On SQLite and PostgreSQL (`database_url` / `db`).

Every route of the admin sub-app is found by walking its routes, so a new route that writes no
row (or two) fails `test_every_admin_route_writes_exactly_one_row`.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.sql import Executable
from sqlmodel import Session, col, select
from starlette.routing import BaseRoute
from starlette.testclient import TestClient

from tests.conftest import PG_ADMIN_DSN, _pg_available
from tests.helpers import login_session, make_user
from vgen_app import clock
from vgen_app import db as dbmod
from vgen_app.api.app import create_api
from vgen_app.api.errors import RETRY_AFTER_S
from vgen_app.api.internal import AdminRoute, create_internal_api
from vgen_app.config import reset_settings
from vgen_app.db import UNAVAILABLE, with_db
from vgen_app.models import AdminAudit, AnalyticsOutbox, LedgerEntry, User, UserStatus
from vgen_app.services import accounts, audit, erasure, ledger, sessions

TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNKNOWN_ID = "noSuchUser123"

pytestmark = pytest.mark.usefixtures("local_storage")


@pytest.fixture
def admin_token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("ADMIN_TOKENS", raising=False)
    reset_settings()
    audit.forget_refused()
    return TOKEN


@pytest.fixture
def api(database_url: str, admin_token: str) -> Iterator[TestClient]:
    with TestClient(create_internal_api(), headers=AUTH) as c:
        yield c


@pytest.fixture
def failing_api(database_url: str, admin_token: str) -> Iterator[TestClient]:
    """The same, answering a server error as a 500 instead of raising it in the test."""
    with TestClient(create_internal_api(), headers=AUTH, raise_server_exceptions=False) as c:
        yield c


def _rows(**where: Any) -> list[AdminAudit]:
    def read(s: Session) -> list[AdminAudit]:
        query = select(AdminAudit)
        for name, value in where.items():
            query = query.where(getattr(AdminAudit, name) == value)
        rows = list(s.exec(query.order_by(col(AdminAudit.id))))
        s.expunge_all()
        return rows

    return with_db(read)


def _user(user_id: str) -> User:
    def read(s: Session) -> User | None:
        user = s.get(User, user_id)
        s.expunge_all()
        return user

    user = with_db(read)
    assert user is not None
    return user


def _ledger(user_id: str) -> list[LedgerEntry]:
    def read(s: Session) -> list[LedgerEntry]:
        rows = list(s.exec(select(LedgerEntry).where(col(LedgerEntry.user_id) == user_id)))
        s.expunge_all()
        return rows

    return with_db(read)


def _balance_outbox_rows() -> int:
    def read(s: Session) -> int:
        rows = s.exec(select(AnalyticsOutbox)).all()
        return sum(1 for r in rows if r.table_name == "balance_changes")

    return with_db(read)


# --- every route, exactly one row ------------------------------------------------------------------


def admin_routes() -> list[tuple[AdminRoute, str]]:
    """Every AdminRoute of the admin sub-app with its full path template (included routers too)."""
    found: list[tuple[AdminRoute, str]] = []

    def walk(routes: Sequence[BaseRoute], prefix: str) -> None:
        for route in routes:
            if hasattr(route, "original_router"):  # FastAPI's included routers
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            elif isinstance(route, AdminRoute):
                found.append((route, prefix + route.path_format))

    walk(create_internal_api().routes, "")
    return found


# Samples by parameter name / body model, for building a valid request to any route.
QUERY_SAMPLES: dict[str, Callable[[str, str], str]] = {"email": lambda uid, email: email}
BODY_SAMPLES: dict[str, Callable[[str], dict[str, Any]]] = {
    "StatusRequest": lambda uid: {"userID": uid, "status": "activated"},
    "BalanceRequest": lambda uid: {"userID": uid, "diff": 5},
}


def _request(route: AdminRoute, template: str, uid: str, email: str) -> dict[str, Any]:
    """A request to `route` that passes validation, about the user `uid` where it takes one."""
    path = re.sub(r"\{userID\}", uid, template)
    assert "{" not in path, f"give {template}'s path parameters a sample"
    params = {}
    for query in route.dependant.query_params:
        if query.field_info.is_required():
            assert query.alias in QUERY_SAMPLES, f"give {template}'s ?{query.alias} a sample"
            params[query.alias] = QUERY_SAMPLES[query.alias](uid, email)
    request: dict[str, Any] = {"method": next(iter(route.methods)), "url": path, "params": params}
    if route.body_field is not None:
        model = route.body_field.field_info.annotation.__name__
        assert model in BODY_SAMPLES, f"give {template}'s body ({model}) a sample"
        request["json"] = BODY_SAMPLES[model](uid)
    return request


def _about_a_user(route: AdminRoute) -> bool:
    return bool(route.dependant.path_params) or route.body_field is not None


def test_the_routes_are_all_found_and_each_has_its_own_action() -> None:
    routes = admin_routes()
    names = [route.name for route, _ in routes]
    assert len(routes) == 10 and len(set(names)) == len(names)
    assert set(names) == set(audit.ACTIONS)
    assert {template for _, template in routes} >= {"/audit", "/users/{userID}/ledger"}


@pytest.mark.parametrize("variant", ["ok", "unknown_user", "refused"])
def test_every_admin_route_writes_exactly_one_row(
    api: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch, variant: str
) -> None:
    monkeypatch.setenv("ADMIN_AUDIT_REFUSED_PER_MINUTE", "100")
    reset_settings()
    routes = admin_routes()
    wrong = "Bearer not-the-token"
    for n, (route, template) in enumerate(routes):
        email = f"user{n}@example.com"
        uid = make_user(db, email)
        ledger.change_balance(db, uid, 50, "topup")
        about = UNKNOWN_ID if variant == "unknown_user" else uid
        if variant == "unknown_user":
            email = "nobody@example.com"
        request = _request(route, template, about, email)
        headers = {"Authorization": wrong} if variant == "refused" else {}
        before = len(_rows())
        r = api.request(**request, headers=headers)
        rows = _rows()[before:]
        assert len(rows) == 1, (template, variant, r.status_code, rows)
        row = rows[0]
        assert (row.action, row.method, row.route) == (route.name, request["method"], template)
        assert row.path == request["url"]
        assert row.status == r.status_code
        if variant == "refused":
            assert r.status_code == 401
            assert row.token == audit.fingerprint("not-the-token") != audit.fingerprint(TOKEN)
            assert (row.outcome, row.request) == ("refused", {"reason": "wrong_token"})
            continue
        assert row.token == audit.fingerprint(TOKEN)
        if variant == "ok":
            assert r.status_code == 200, (template, r.text)
            assert row.outcome == "ok"
            if _about_a_user(route) or route.name == audit.FIND_BY_EMAIL:
                assert row.user_id == uid
        elif _about_a_user(route):
            assert r.status_code == 404, (template, r.text)
            assert (row.outcome, row.user_id) == ("not_found", UNKNOWN_ID)
        else:
            assert r.status_code == 200 and row.outcome in ("ok", "not_found")
        assert TOKEN not in str(row.request) and "@" not in str(row.request)


def test_a_call_refused_before_any_work_is_one_row_too(api: TestClient, db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    calls = [
        ("PUT", "/balance", {"json": {"userID": uid, "diff": "1.5"}}, 422),
        ("PUT", "/user", {"json": {"userID": uid, "status": "admin"}}, 422),
        ("GET", "/users/bad!id", {}, 422),
        ("GET", "/users/a%00b", {}, 422),  # a NUL in the path: PostgreSQL stores none in text
        ("GET", "/audit", {"params": {"limit": 0}}, 422),
        ("PUT", "/balance", {"content": b"{" + b" " * 70_000 + b"}"}, 413),
    ]
    for method, path, kwargs, status in calls:
        before = len(_rows())
        r = api.request(method, path, **kwargs)
        assert r.status_code == status, (path, r.text)
        (row,) = _rows()[before:]
        assert (row.status, row.outcome) == (status, "invalid" if status == 422 else "too_large")
    assert _rows(path="/users/a\ufffdb")[0].route == "/users/{userID}"
    assert _user(uid).balance == 0


def test_what_a_row_holds(api: TestClient, db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    assert api.put("/balance", json={"userID": uid, "diff": 300}).status_code == 200
    assert api.put("/balance", json={"userID": uid, "diff": -500}).status_code == 409
    assert api.put("/user", json={"userID": uid, "status": "blocked"}).status_code == 200
    assert sessions.validate(db, token) is None
    entries = sorted(_ledger(uid), key=lambda e: e.id or 0)
    up, refused, status = _rows()
    assert (up.action, up.user_id, up.request) == ("change_balance", uid, {"diff": 300})
    assert (up.before, up.after) == (
        {"balance": 0},
        {"balance": 300, "ledger_entry": entries[0].id},
    )
    assert (up.outcome, up.status) == ("ok", 200)
    assert (refused.outcome, refused.status) == ("rejected", 409)
    assert (refused.before, refused.after) == (
        {"balance": 300},
        {"balance": 300, "ledger_entry": entries[1].id},
    )
    assert status.request == {"status": "blocked"}
    assert status.before == {"status": "activated"}
    assert status.after == {"status": "blocked", "sessions_revoked": 1}
    assert up.created_at.tzinfo is not None and up.created_at <= status.created_at
    # The deletion: what went (counted in its batch), and the files once removed.
    assert api.delete(f"/user/{uid}").status_code == 200
    (gone,) = _rows(action="delete_user")
    assert gone.before is not None and gone.before["sessions"] == 1 and gone.before["tasks"] == 0
    assert gone.after is not None and gone.after["status"] == "blocked"
    assert gone.after["files_failed"] == 0 and "deleted_at" in gone.after


def test_the_route_is_the_full_template_through_the_mount(
    database_url: str, admin_token: str
) -> None:
    uid = with_db(make_user, "ann@example.com")
    with TestClient(create_api(), base_url="http://localhost:3000") as c:
        assert c.get(f"/api/internal/users/{uid}/ledger", headers=AUTH).status_code == 200
    (row,) = _rows()
    assert row.route == "/api/internal/users/{userID}/ledger"
    assert row.path == f"/api/internal/users/{uid}/ledger"


# --- the same transaction --------------------------------------------------------------------------


PG_AUDIT_DOWN_FUNCTION = (
    "CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit down'; END $$"
)
PG_AUDIT_DOWN_TRIGGER = (
    "CREATE TRIGGER audit_down BEFORE INSERT ON admin_audit "
    "FOR EACH ROW EXECUTE FUNCTION audit_down()"
)
SQLITE_AUDIT_DOWN_TRIGGER = (
    "CREATE TRIGGER audit_down BEFORE INSERT ON admin_audit "
    "BEGIN SELECT RAISE(ABORT, 'audit down'); END"
)


@pytest.fixture
def audit_inserts_fail(database_url: str) -> Iterator[None]:
    """A trigger that refuses every INSERT into admin_audit (dropped afterwards)."""
    engine = dbmod.get_engine()
    if engine.dialect.name == "postgresql":
        create = [PG_AUDIT_DOWN_FUNCTION, PG_AUDIT_DOWN_TRIGGER]
        drop = [
            "DROP TRIGGER IF EXISTS audit_down ON admin_audit",
            "DROP FUNCTION IF EXISTS audit_down()",
        ]
    else:
        create = [SQLITE_AUDIT_DOWN_TRIGGER]
        drop = ["DROP TRIGGER IF EXISTS audit_down"]
    with engine.begin() as conn:
        for sql in create:
            conn.execute(text(sql))
    try:
        yield
    finally:
        with engine.begin() as conn:
            for sql in drop:
                conn.execute(text(sql))


def test_no_change_when_its_audit_row_cannot_be_written(
    failing_api: TestClient, db: Session, audit_inserts_fail: None
) -> None:
    uid = make_user(db, "ann@example.com")
    ledger.change_balance(db, uid, 100, "topup")
    token = login_session(db, "ann@example.com")
    outbox_before = _balance_outbox_rows()

    for diff in (50, -500):  # an applied change and a refused attempt: neither is recorded
        assert failing_api.put("/balance", json={"userID": uid, "diff": diff}).status_code == 500
    assert _user(uid).balance == 100
    assert len(_ledger(uid)) == 1 and _balance_outbox_rows() == outbox_before

    assert failing_api.put("/user", json={"userID": uid, "status": "blocked"}).status_code == 500
    assert _user(uid).status == UserStatus.ACTIVATED
    assert sessions.validate(db, token) is not None

    assert failing_api.delete(f"/user/{uid}").status_code == 500
    user = _user(uid)
    assert (user.deleted_at, user.email) == (None, "ann@example.com")
    assert sessions.validate(db, token) is not None

    # A read whose row cannot be written sends no data.
    r = failing_api.get(f"/users/{uid}")
    assert r.status_code == 500 and "ann@example.com" not in r.text
    assert _rows() == []


def _crash_at_end_of_batch(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """The module's next batches fail on a last statement, after the change and its audit row
    (a CHECK violation: an IntegrityError on both databases, not "unavailable")."""
    real = dbmod.run_batch

    def doomed(db: Session, statements: Sequence[Executable]) -> Any:
        return real(db, [*statements, text("UPDATE users SET balance = -1")])

    monkeypatch.setattr(module, "run_batch", doomed)


@pytest.mark.parametrize("change", ["balance", "status", "delete"])
def test_a_change_that_fails_leaves_no_ok_row(
    failing_api: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    uid = make_user(db, "ann@example.com")
    token = login_session(db, "ann@example.com")
    module, method, path, body = {
        "balance": (ledger, "PUT", "/balance", {"userID": uid, "diff": 50}),
        "status": (accounts, "PUT", "/user", {"userID": uid, "status": "blocked"}),
        "delete": (erasure, "DELETE", f"/user/{uid}", None),
    }[change]
    _crash_at_end_of_batch(monkeypatch, module)
    r = failing_api.request(method, path, json=body)
    assert r.status_code == 500
    (row,) = _rows()  # the call's one row says it failed; the batch's own `ok` row is gone
    assert (row.outcome, row.status, row.user_id) == ("error", 500, uid)
    assert _rows(outcome="ok") == []
    user = _user(uid)
    assert (user.balance, user.status, user.deleted_at) == (0, UserStatus.ACTIVATED, None)
    assert _ledger(uid) == [] and sessions.validate(db, token) is not None


# --- token rotation --------------------------------------------------------------------------------


def test_two_tokens_at_once_then_the_old_one_removed(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = "old-admin-token-0123456789", "new-admin-token-9876543210"
    monkeypatch.setenv("ADMIN_TOKEN", old)
    monkeypatch.setenv("ADMIN_TOKENS", f" {new} , ")
    reset_settings()
    audit.forget_refused()
    uid = with_db(make_user, "ann@example.com")
    with TestClient(create_internal_api()) as c:  # one app, serving across the rotation

        def as_(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        for token in (old, new):
            r = c.put("/balance", json={"userID": uid, "diff": 10}, headers=as_(token))
            assert r.status_code == 200, token
        rows = _rows()
        assert [r.token for r in rows] == [audit.fingerprint(old), audit.fingerprint(new)]
        assert audit.fingerprint(old) != audit.fingerprint(new)
        assert all(re.fullmatch(r"[0-9a-f]{8}", r.token or "") for r in rows)
        page = c.get("/audit", params={"token": audit.fingerprint(new)}, headers=as_(old)).json()
        assert [i["id"] for i in page["items"]] == [rows[1].id]  # who did what, by token

        # The callers moved to the new token: the old one is dropped (a JSON list this time).
        monkeypatch.delenv("ADMIN_TOKEN")
        monkeypatch.setenv("ADMIN_TOKENS", f'["{new}"]')
        reset_settings()
        r = c.put("/balance", json={"userID": uid, "diff": 10}, headers=as_(old))
        assert r.status_code == 401 and r.json() == {"detail": "Invalid admin token."}
        assert c.get(f"/users/{uid}", headers=as_(new)).status_code == 200
    assert _user(uid).balance == 20
    refused = _rows(outcome="refused")
    assert [r.token for r in refused] == [audit.fingerprint(old)]


def test_the_configured_tokens() -> None:
    from vgen_app.config import Settings

    assert Settings(admin_token=" a ", admin_tokens="b, a,,c ").admin_tokens_configured == [
        "a",
        "b",
        "c",
    ]
    assert Settings(admin_token=None, admin_tokens='["x", " "]').admin_tokens_configured == ["x"]
    assert Settings(admin_token="", admin_tokens=" , ").admin_tokens_configured == []
    with pytest.raises(ValueError, match="list of strings"):
        Settings(admin_tokens='["x", 1]')


def test_only_tokens_configured_in_admin_tokens_work(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("ADMIN_TOKENS", "first-token-abcdef,second-token-abcdef")
    reset_settings()
    with TestClient(create_internal_api()) as c:
        for token, status in (
            ("first-token-abcdef", 404),
            ("second-token-abcdef", 404),
            ("x", 401),
        ):
            r = c.get(f"/users/{UNKNOWN_ID}", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == status, token


# --- reading: /audit and /users/{userID}/ledger ----------------------------------------------------


def _all_pages(api: TestClient, path: str, **params: Any) -> list[list[dict[str, Any]]]:
    pages, before = [], None
    while True:
        query = {**params, **({"before_id": before} if before is not None else {})}
        r = api.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body["items"])
        before = body["next_before_id"]
        if before is None:
            return pages
        assert before == body["items"][-1]["id"]


def test_audit_is_paged_newest_first_and_filtered_by_user(api: TestClient, db: Session) -> None:
    ann, bob = make_user(db, "ann@example.com"), make_user(db, "bob@example.com")
    for diff in (1, 2, 3):
        api.put("/balance", json={"userID": ann, "diff": diff})
    api.put("/balance", json={"userID": bob, "diff": 7})
    api.get(f"/users/{bob}")
    api.put("/user", json={"userID": ann, "status": "blocked"})
    written = [r.id for r in _rows()]
    assert len(written) == 6

    pages = _all_pages(api, "/audit", limit=4)
    ids = [i["id"] for page in pages for i in page]
    assert [len(p) for p in pages] == [4, 2]  # the reads' own rows come after: not on these pages
    assert ids == sorted(written, reverse=True)
    newest = pages[0][0]
    assert (newest["action"], newest["userID"], newest["outcome"]) == ("set_status", ann, "ok")
    assert newest["before"] == {"status": "activated"} and newest["token"] == audit.fingerprint(
        TOKEN
    )

    mine = [i for page in _all_pages(api, "/audit", userID=ann, limit=2) for i in page]
    assert {i["userID"] for i in mine} == {ann}
    assert [i["action"] for i in mine] == ["set_status", *["change_balance"] * 3]
    assert [i["request"] for i in mine[1:]] == [{"diff": 3}, {"diff": 2}, {"diff": 1}]
    # Reading the audit is audited, with the filter it was asked for.
    reads = _rows(action="read_audit", user_id=ann)
    assert len(reads) == 2 and reads[0].request == {"limit": 2, "userID": ann}
    only_bob_reads = api.get("/audit", params={"userID": bob, "action": "get_user"}).json()
    assert [i["action"] for i in only_bob_reads["items"]] == ["get_user"]
    assert api.get("/audit", params={"userID": UNKNOWN_ID}).json() == {
        "items": [],
        "next_before_id": None,
    }
    assert api.get("/audit", params={"limit": 201}).status_code == 422
    # Ids are INTEGER (32-bit on PostgreSQL): the largest is accepted, past it 422 (never a 500).
    for path in ("/audit", f"/users/{ann}/ledger"):
        assert api.get(path, params={"before_id": 2**31 - 1}).status_code == 200
        assert api.get(path, params={"before_id": 2**31}).status_code == 422


def test_a_users_ledger_is_paged_newest_first(api: TestClient, db: Session) -> None:
    ann, bob = make_user(db, "ann@example.com"), make_user(db, "bob@example.com")
    ledger.change_balance(db, ann, 100, "topup", reference="cs_1")
    api.put("/balance", json={"userID": ann, "diff": -30})
    api.put("/balance", json={"userID": ann, "diff": -500})  # refused: listed as rejected
    ledger.change_balance(db, bob, 9, "topup")
    api.put("/balance", json={"userID": ann, "diff": 5})
    pages = _all_pages(api, f"/users/{ann}/ledger", limit=2)
    assert [len(p) for p in pages] == [2, 2]
    items = [i for page in pages for i in page]
    assert [(i["diff"], i["outcome"]) for i in items] == [
        (5, "applied"),
        (-500, "rejected"),
        (-30, "applied"),
        (100, "applied"),
    ]
    assert [(i["old_balance"], i["new_balance"]) for i in items] == [
        (70, 75),
        (70, 70),
        (100, 70),
        (0, 100),
    ]
    assert items[0]["action"] == "manual" and items[0]["reference"] == "admin"
    assert items[-1]["reference"] == "cs_1"
    assert [i["id"] for i in items] == sorted((i["id"] for i in items), reverse=True)
    assert [i["diff"] for p in _all_pages(api, f"/users/{bob}/ledger") for i in p] == [9]
    assert api.get(f"/users/{UNKNOWN_ID}/ledger").status_code == 404
    (row,) = _rows(action="user_ledger", status=404)
    assert row.user_id == UNKNOWN_ID
    # A deleted user's ledger is kept and listed.
    assert api.delete(f"/user/{bob}").status_code == 200
    assert [i["diff"] for i in api.get(f"/users/{bob}/ledger").json()["items"]] == [9]


# --- refused calls: rows, capped -------------------------------------------------------------------


def test_refused_rows_are_capped_per_minute(
    api: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADMIN_AUDIT_REFUSED_PER_MINUTE", "3")
    reset_settings()
    audit.forget_refused()
    wrong = {"Authorization": "Bearer wrong-token"}
    for _ in range(7):
        assert api.get(f"/users/{UNKNOWN_ID}", headers=wrong).status_code == 401
    assert api.get(f"/users/{UNKNOWN_ID}", headers={"Authorization": ""}).status_code == 401
    refused = _rows(outcome="refused")
    assert len(refused) == 3
    assert {r.token for r in refused} == {audit.fingerprint("wrong-token")}
    assert api.get(f"/users/{UNKNOWN_ID}").status_code == 404  # a good call is still a row
    assert len(_rows()) == 4

    clock.travel(
        timedelta(seconds=61)
    )  # the next minute: rows again, saying how many were left out
    assert api.get("/shortfalls", headers={"Authorization": "Basic x"}).status_code == 401
    latest = _rows(outcome="refused")[-1]
    assert latest.token is None and latest.request == {"reason": "malformed"}
    assert latest.after == {"suppressed_before": 5}


def test_the_cap_holds_across_processes(
    api: TestClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused rows another worker wrote in the last minute count: this process's own count is
    fresh, yet the conditional INSERT writes nothing past the cap."""
    monkeypatch.setenv("ADMIN_AUDIT_REFUSED_PER_MINUTE", "2")
    reset_settings()
    for _ in range(2):
        call = audit.Call("GET", "/shortfalls", "/shortfalls", audit.SHORTFALLS, status=401)
        call.outcome = audit.REFUSED
        audit.record(db, call)
    audit.forget_refused()  # this process has refused nothing yet
    assert api.get("/shortfalls", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert len(_rows(outcome="refused")) == 2
    clock.travel(timedelta(seconds=61))
    assert api.get("/shortfalls", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert len(_rows(outcome="refused")) == 3


def test_with_no_token_configured_nothing_is_written(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ADMIN_TOKENS", raising=False)
    reset_settings()
    with TestClient(create_internal_api()) as c:
        assert c.get("/audit", headers=AUTH).status_code == 503
    assert _rows() == []


# --- the database unreachable ----------------------------------------------------------------------

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/vgen"  # nothing listens on port 1


@pytest.mark.parametrize("mounted", [False, True])
def test_the_database_unreachable_is_503_with_retry_after(
    admin_token: str, monkeypatch: pytest.MonkeyPatch, mounted: bool
) -> None:
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    reset_settings()
    app, prefix = (create_api(), "/api/internal") if mounted else (create_internal_api(), "")
    calls = [
        ("GET", f"/users/{UNKNOWN_ID}", None),
        ("GET", "/audit", None),
        ("GET", f"/users/{UNKNOWN_ID}/ledger", None),
        ("PUT", "/balance", {"userID": UNKNOWN_ID, "diff": 5}),
        ("PUT", "/user", {"userID": UNKNOWN_ID, "status": "blocked"}),
        ("DELETE", f"/user/{UNKNOWN_ID}", None),
    ]
    try:
        with TestClient(app, base_url="http://localhost:3000", headers=AUTH) as c:
            for method, path, body in calls:
                r = c.request(method, prefix + path, json=body)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == str(RETRY_AFTER_S)
                assert r.json()["detail"] == UNAVAILABLE
            # Without the token: still 401 (its row is best effort, the refusal stands).
            r = c.get(prefix + "/audit", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401
    finally:
        dbmod.dispose_engines()


# --- migration 0008 --------------------------------------------------------------------------------


def _tables(url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = dbmod.make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _up_down_up(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from vgen_app.cli import migrate
    from vgen_app.config import ROOT

    migrate(url)
    assert {"admin_audit", "users", "ledger_entries"} <= _tables(url)
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes.update(database_url=url, configure_logger=False)
    command.downgrade(cfg, "0007")
    tables = _tables(url)
    assert "admin_audit" not in tables and {"users", "ledger_entries"} <= tables
    migrate(url)
    assert "admin_audit" in _tables(url)


def test_migration_0008_up_and_down_on_a_fresh_sqlite(tmp_path: Path) -> None:
    _up_down_up(f"sqlite:///{tmp_path / 'fresh.db'}")


@pytest.mark.postgres
def test_migration_0008_up_and_down_on_a_fresh_postgres() -> None:
    if not _pg_available():
        pytest.skip("local PostgreSQL is not running")
    name = f"vgen_audit_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        _up_down_up(f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}")
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
