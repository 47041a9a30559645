"""Issue H: the download route, and every /api route with user data (SQLite and PostgreSQL).

No session 401, forged / revoked / expired / blocked session 401, someone else's run (or a junk
id) 404; none of the routes that touch a user's data hands anything to a caller without a live
session. Each scenario records its figure.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from sqlmodel import select
from starlette.testclient import TestClient

from tests.helpers import login_session
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import BOTH, JUNK_RUN_IDS, ORIGIN, Downloads
from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import session_scope
from vgen_app.models import UserSession
from vgen_app.services import accounts, sessions

client = abuse_helpers.client
secrets_set = abuse_helpers.secrets_set
storage_root = abuse_helpers.storage_root
downloads = abuse_helpers.downloads


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
