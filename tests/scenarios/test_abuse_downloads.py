"""Issue H: the download route, and every /api route with user data (SQLite and PostgreSQL).

No session 401, forged / revoked / expired / blocked session 401, someone else's run (or a junk
id) 404; none of the routes that touch a user's data hands anything to a caller without a live
session. Each scenario records its figure.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import BOTH, ORIGIN
from vgen_app import clock
from vgen_app.adapters import storage as storage_mod
from vgen_app.config import get_settings
from vgen_app.db import session_scope
from vgen_app.models import Run, UserSession
from vgen_app.services import accounts, sessions, tasks

client = abuse_helpers.client
secrets_set = abuse_helpers.secrets_set
storage_root = abuse_helpers.storage_root


@dataclass
class Downloads:
    run_id: str
    other_run_id: str  # eve's own run
    content: bytes
    tokens: dict[str, str]  # ann, eve (sessions)
    ids: dict[str, str]  # user ids


@pytest.fixture
def downloads(database_url: str, storage_root: Path) -> Downloads:
    """Two users, each with a task and a succeeded run whose result is in storage."""
    content = b"\x00\x00\x00\x18ftypmp42" + os.urandom(50_000)
    storage_root.parent.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    runs_by: dict[str, str] = {}
    with session_scope() as db:
        for name in ("ann", "eve"):
            uid = make_user(db, f"{name}@example.com")
            made[name] = uid
            task = tasks.create_task(db, uid, "lipsync", f"{name}'s clip")
            run = Run(
                task_id=task.id,
                owner_id=uid,
                attempt=1,
                status="succeeded",
                progress=1.0,
                price=500,
                model="lipsync",
                inputs={},
                result_key=f"results/{task.id}/{uuid.uuid4().hex}.mp4",
                result_bytes=len(content),
            )
            db.add(run)
            db.commit()
            src = storage_root.parent / f"{name}.mp4"
            src.write_bytes(content)
            storage_mod.get_storage().put_file(run.result_key, src)
            src.unlink()
            runs_by[name] = run.id
        tokens = {name: login_session(db, f"{name}@example.com") for name in made}
    return Downloads(runs_by["ann"], runs_by["eve"], content, tokens, made)


JUNK_RUN_IDS = [
    "nonexistent",
    "%00",
    "abc%00def",
    "a" * 33,
    "a" * 5000,
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%E2%80%AE",
    "%27%20OR%201%3D1%20--",
    "%F0%9F%8E%AC",
]


@BOTH
def test_result_download_sessions_and_ownership(
    client: TestClient, downloads: Downloads, figure: Any
) -> None:
    url = f"/api/runs/{downloads.run_id}/result"

    def get(path: str, token: str | None = None, **cookies: str) -> Any:
        jar = {"vgen_session": token} if token is not None else {}
        jar.update(cookies)
        header = "; ".join(f"{k}={v}" for k, v in jar.items())
        return client.get(path, headers={"Cookie": header} if header else {})

    codes: Counter[str] = Counter()
    # No session, a forged one, junk cookies: 401 — the run id is not even looked at.
    for token in (None, "", "forged-token", "x" * 5000, downloads.tokens["ann"] + "x"):
        r = get(url, token)
        assert r.status_code == 401 and r.json() == {"detail": "Log in to download."}, token
        codes["no/forged session 401"] += 1
    r = get(url, other_cookie="1", __Host_vgen_session=downloads.tokens["ann"])
    assert r.status_code == 401  # the cookie's name on https, sent to an http app: not ours
    codes["no/forged session 401"] += 1
    # Someone else's run, and junk ids, with a valid session: 404, same body as unknown.
    r = get(url, downloads.tokens["eve"])
    assert r.status_code == 404 and r.json() == {"detail": "Not found."}
    codes["other user's run 404"] += 1
    for run_id in JUNK_RUN_IDS:
        for who in ("ann", "eve"):
            r = get(f"/api/runs/{run_id}/result", downloads.tokens[who])
            assert r.status_code == 404, (run_id, who, r.status_code, r.text[:200])
            codes["junk run id 404"] += 1
        anonymous = get(f"/api/runs/{run_id}/result").status_code
        if "%2F" in run_id:  # decodes to more path segments: no route matches, nothing is reached
            assert anonymous == 404
        else:
            assert anonymous == 401, run_id
        codes["junk run id, no session 401/404"] += 1
    # The owner gets the bytes; eve gets her own run, never ann's.
    r = get(url, downloads.tokens["ann"])
    assert r.status_code == 200 and r.content == downloads.content
    r = get(f"/api/runs/{downloads.other_run_id}/result", downloads.tokens["eve"])
    assert r.status_code == 200
    # A revoked session (logout), a blocked user, an expired session: 401.
    ann = downloads.tokens["ann"]
    assert (
        client.post("/api/auth/logout", headers={"Cookie": f"vgen_session={ann}"}).status_code
        == 200
    )
    assert get(url, ann).status_code == 401
    codes["revoked session 401"] += 1
    eve = downloads.tokens["eve"]
    with session_scope() as db:
        accounts.set_status(db, downloads.ids["eve"], "blocked")
    assert get(f"/api/runs/{downloads.other_run_id}/result", eve).status_code == 401
    codes["blocked user 401"] += 1
    with session_scope() as db:
        accounts.set_status(db, downloads.ids["eve"], "activated")
        fresh = login_session(db, "ann@example.com")
    assert get(url, fresh).status_code == 200
    clock.travel(timedelta(days=get_settings().session_ttl_days, minutes=1))
    assert get(url, fresh).status_code == 401
    codes["expired session 401"] += 1
    figure(f"{sum(codes.values())} download attempts by non-owners: {dict(codes)}; owner 200")


@BOTH
def test_every_api_route_with_user_data_needs_a_live_session(
    client: TestClient, downloads: Downloads, figure: Any
) -> None:
    """The /api routes that touch a user's data are the download and the two session routes; the
    admin API is token-only and the webhook signature-only (both above). None of them hands a
    cookie, a redirect into the app or any data to a caller without a live session."""
    ann = downloads.tokens["ann"]
    with session_scope() as db:
        sessions.revoke(db, ann)
    for cookie in ("", f"vgen_session={ann}", "vgen_session=forged"):
        headers = {"Cookie": cookie} if cookie else {}
        download = client.get(f"/api/runs/{downloads.run_id}/result", headers=headers)
        assert download.status_code == 401
        redeem = client.get(
            "/api/auth/session", params={"ticket": ann}, headers=headers, follow_redirects=False
        )
        assert redeem.status_code == 303 and "set-cookie" not in redeem.headers
        assert redeem.headers["location"] == f"{ORIGIN}/login?expired=1"
        out = client.post("/api/auth/logout", headers=headers)
        assert out.status_code == 200 and out.json() == {
            "ok": True
        }  # clears the cookie, nothing else
    with session_scope() as db:
        live = {s.user_id for s in db.exec(select(UserSession)) if s.revoked_at is None}
    assert live == {downloads.ids["eve"]}  # eve's untouched, no new one
    figure(
        "revoked / forged / missing cookie on download, session, logout: 401 / 303 to /login / 200 no-op; no session created"
    )
