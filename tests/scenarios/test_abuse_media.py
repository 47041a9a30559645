"""Issue L: the owner-only media route `GET|HEAD /api/media/{input|result|poster}/{ref}` under
abuse (SQLite and PostgreSQL).

No session, a forged / revoked / expired session and someone else's session get the same 404 as a
junk ref, an unknown kind and everything of a deleted task; Range headers that are malformed, ask
for several ranges or start past the end get 416 with `Content-Range: bytes */<size>` (an unknown
range unit: the whole object, 200); valid ones at the edges get exactly their bytes. Every response's
status is counted: no 5xx at all. Each scenario records its figure.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.helpers import login_session
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import BOTH, JUNK_RUN_IDS, Downloads
from vgen_app import clock
from vgen_app.adapters import storage as storage_mod
from vgen_app.config import get_settings
from vgen_app.db import session_scope
from vgen_app.models import Run
from vgen_app.services import accounts, sessions, uploads

client = abuse_helpers.client
secrets_set = abuse_helpers.secrets_set
storage_root = abuse_helpers.storage_root
downloads = abuse_helpers.downloads

NOT_FOUND = {"detail": "Not found."}
KINDS = ("result", "poster", "input")
TYPES = {"result": "video/mp4", "poster": "image/jpeg", "input": "audio/mp4"}

# Refs that are no one's input and no one's run, whatever the kind (the run-id junk of the download
# route, and what an integer id could be mistaken for).
JUNK_REFS = [
    *JUNK_RUN_IDS,
    "-1",
    "0",
    "00000000000",
    "1e3",
    "1.0",
    "+1",
    "0x1",
    "%201",
    "1%20",
    "1%00",
    "%0A1",
    "1%0A",
    "2147483648",  # past a 32-bit integer column (as an input id: INPUT_IDS_PAST_INT32)
    "99999999999",  # the longest all-digit ref looked up as an input id (likewise)
    "9223372036854775808",  # past a 64-bit integer
    "99999999999999999999",
    "9" * 5000,
    "%C2%BD",  # ½: numeric, not a digit
    "null",
    "undefined",
    "%2A",
]
UNKNOWN_KINDS = [
    "inputs",
    "Result",
    "RESULT",
    "INPUT",
    "posters",
    "thumbnail",
    "download",
    "results",
    "result.mp4",
    "%00",
    "input%00",
    "..",
    "%2e%2e",
    "a" * 5000,
    "%F0%9F%8E%AC",
]


class Probe:
    """Requests to the app with a session cookie (or none); every response's status is counted."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.codes: Counter[int] = Counter()

    def __call__(
        self,
        url: str,
        token: str | None = None,
        method: str = "GET",
        headers: dict[str, Any] | list[tuple[str, Any]] | None = None,
        cookie: str | None = None,
    ) -> httpx.Response:
        sent = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if cookie is None and token is not None:
            cookie = f"vgen_session={token}"
        if cookie:
            sent.append(("Cookie", cookie))
        r = self.client.request(method, url, headers=sent)
        self.codes[r.status_code] += 1
        return r

    def no_5xx(self) -> None:
        assert not [c for c in self.codes if c >= 500], dict(self.codes)

    def figure(self) -> str:
        return f"{sum(self.codes.values())} requests, by status {dict(sorted(self.codes.items()))}"


def urls(d: Downloads, who: str) -> dict[str, str]:
    run = d.run_id if who == "ann" else d.other_run_id
    return {
        "result": f"/api/media/result/{run}",
        "poster": f"/api/media/poster/{run}",
        "input": f"/api/media/input/{d.input_ids[who]}",
    }


def content_of(d: Downloads, kind: str) -> bytes:
    return {"result": d.content, "poster": d.poster, "input": d.audio}[kind]


def assert_hidden(r: httpx.Response, d: Downloads, method: str, what: object) -> None:
    """A 404 that tells nothing: the same body as an unknown ref, no byte of any stored file, no
    validator or range of the object."""
    assert r.status_code == 404, (what, method, r.status_code, r.text[:200])
    if method == "GET":
        assert r.json() == NOT_FOUND, (what, r.text[:200])
    else:
        assert r.content == b"", what
    for stored in (d.content, d.poster, d.audio):
        assert stored[:16] not in r.content and stored[-16:] not in r.content
    for header in ("etag", "content-range", "accept-ranges", "content-disposition"):
        assert header not in r.headers, (what, header)


def assert_routed_404(r: httpx.Response, what: object) -> None:
    """404 with nothing in it: the route's own body, or, for a ref that matches no route (one that
    decodes to more path segments, or starts with a newline), the app's plain one."""
    assert r.status_code == 404, (what, r.status_code, r.text[:200])
    if r.request.method == "GET":
        assert r.content in (b'{"detail":"Not found."}', b"Not Found"), (what, r.text[:200])
    else:
        assert r.content == b"", what


@BOTH
def test_media_needs_the_owners_live_session(
    client: TestClient, downloads: Downloads, figure: Any
) -> None:
    probe = Probe(client)
    d = downloads
    ann, eve = d.tokens["ann"], d.tokens["eve"]
    anns = urls(d, "ann")
    etags = {kind: probe(url, ann).headers["etag"] for kind, url in anns.items()}
    strangers: list[tuple[str, str | None, str | None]] = [
        ("no session", None, None),
        ("empty cookie", "", None),
        ("forged", "forged-token", None),
        ("forged, long", "x" * 5000, None),
        ("ann's token + x", ann + "x", None),
        ("ann's token - 1 char", ann[:-1], None),
        ("ann's token in another cookie", None, f"other_session={ann}"),
        ("__Host- cookie on http", None, f"__Host-vgen_session={ann}"),
        ("junk cookie header", None, '";;=\x7f' + "=" * 100),
        ("eve", eve, None),
    ]
    hidden = 0
    for what, token, cookie in strangers:
        for kind, url in anns.items():
            for method in ("GET", "HEAD"):
                for headers in (
                    {},
                    {"Range": "bytes=0-9"},
                    {"Range": "bytes=0-1,2-3"},
                    {"If-None-Match": etags[kind]},
                    {"Range": "bytes=0-9", "If-Range": etags[kind]},
                ):
                    r = probe(url, token, method, headers, cookie)
                    assert_hidden(r, d, method, (what, kind, headers))
                    hidden += 1
    # The owner and eve each get their own, whole and in part.
    for who in ("ann", "eve"):
        for kind, url in urls(d, who).items():
            stored = content_of(d, kind)
            whole = probe(url, d.tokens[who])
            assert whole.status_code == 200 and whole.content == stored, (who, kind)
            assert whole.headers["content-type"] == TYPES[kind]
            part = probe(url, d.tokens[who], headers={"Range": "bytes=3-12"})
            assert part.status_code == 206 and part.content == stored[3:13], (who, kind)
    # Ann's input id has one spelling: leading zeros, a sign, and (for id 1) a fullwidth and an
    # Arabic-Indic digit, which int() would read, are nobody's.
    aliases = [f"{d.input_ids['ann']:011d}", f"+{d.input_ids['ann']}"]
    if d.input_ids["ann"] == 1:
        aliases += ["%EF%BC%91", "%D9%A1"]
    alias_codes = []
    for ref in aliases:
        assert_hidden(probe(f"/api/media/input/{ref}", eve), d, "GET", ref)
        alias_codes.append(probe(f"/api/media/input/{ref}", ann).status_code)
        assert alias_codes[-1] == 404, ref
        hidden += 1
    # Revoked (logout), blocked, expired: as good as no session.
    with session_scope() as db:
        sessions.revoke(db, ann)
    for kind, url in anns.items():
        assert_hidden(probe(url, ann), d, "GET", ("revoked", kind))
        hidden += 1
    with session_scope() as db:
        accounts.set_status(db, d.ids["eve"], "blocked")
    for kind, url in urls(d, "eve").items():
        assert_hidden(probe(url, eve), d, "GET", ("blocked", kind))
        hidden += 1
    with session_scope() as db:
        fresh = login_session(db, "ann@example.com")
    assert all(probe(url, fresh).status_code == 200 for url in anns.values())
    clock.travel(timedelta(days=get_settings().session_ttl_days, minutes=1))
    for kind, url in anns.items():
        for method in ("GET", "HEAD"):
            assert_hidden(probe(url, fresh, method), d, method, ("expired", kind))
            hidden += 1
    probe.no_5xx()
    figure(
        f"{hidden} tries at ann's result/poster/input by strangers ({len(strangers)} kinds of "
        f"caller x GET/HEAD x 5 header sets, aliases of ann's input id, revoked, blocked, "
        f"expired): all 404, nothing shown; the aliases for ann: {alias_codes}; {probe.figure()}"
    )


@BOTH
def test_junk_refs_and_unknown_kinds_are_404(
    client: TestClient, downloads: Downloads, storage_root: Path, figure: Any
) -> None:
    probe = Probe(client)
    d = downloads
    callers = {"ann": d.tokens["ann"], "eve": d.tokens["eve"], "nobody": None}
    tried = 0
    for kind in KINDS:
        for ref in JUNK_REFS:
            if kind == "input" and ref in INPUT_IDS_PAST_INT32:
                continue  # a 500 on PostgreSQL: test_input_ids_past_int32_are_404
            for who, token in callers.items():
                assert_routed_404(probe(f"/api/media/{kind}/{ref}", token), (kind, ref, who))
                tried += 1
            assert_routed_404(
                probe(f"/api/media/{kind}/{ref}", d.tokens["ann"], "HEAD"), (kind, ref)
            )
            tried += 1
    # Ann's real refs under a kind that does not exist, or the wrong one.
    run, input_id = d.run_id, str(d.input_ids["ann"])
    for bad in UNKNOWN_KINDS:
        for ref in (run, input_id):
            for method in ("GET", "HEAD"):
                r = probe(f"/api/media/{bad}/{ref}", d.tokens["ann"], method)
                assert_routed_404(r, (bad, ref, method))
                tried += 1
    for url in (
        f"/api/media/input/{run}",
        f"/api/media/result/{input_id}",
        f"/api/media/poster/{input_id}",
        f"/api/media//{run}",
        "/api/media/result/",
        f"/api/media/result/{run}/",
        f"/api/media/result/{run}/x",
        f"/api/media/result/{run}%2F..",
        "/api/media/",
        "/api/media",
    ):
        assert probe(url, d.tokens["ann"]).status_code == 404, url
        tried += 1
    # A run that did not succeed, and one without a poster, though their keys name stored files.
    with session_scope() as db:
        (result_key,) = [k for k in d.keys["ann"] if k.endswith(".mp4")]
        failed = Run(
            task_id=d.task_ids["ann"],
            owner_id=d.ids["ann"],
            attempt=2,
            status="failed",
            price=500,
            model="lipsync",
            inputs={},
            result_key=result_key,
        )
        bare = Run(
            task_id=d.task_ids["ann"],
            owner_id=d.ids["ann"],
            attempt=3,
            status="succeeded",
            progress=1.0,
            price=500,
            model="lipsync",
            inputs={},
            result_key=result_key,
        )
        db.add(failed)
        db.add(bare)
        db.commit()
        failed_id, bare_id = failed.id, bare.id
    for kind in ("result", "poster"):
        assert_hidden(probe(f"/api/media/{kind}/{failed_id}", d.tokens["ann"]), d, "GET", kind)
        tried += 1
    assert_hidden(probe(f"/api/media/poster/{bare_id}", d.tokens["ann"]), d, "GET", "no poster")
    assert probe(f"/api/media/result/{bare_id}", d.tokens["ann"]).status_code == 200
    tried += 1
    # A file gone from storage behind the database's back: 404, not a 500.
    for key in d.keys["ann"]:
        storage_mod.get_storage().delete(key)
    for kind, url in urls(d, "ann").items():
        for headers in ({}, {"Range": "bytes=0-0"}, {"Range": "bytes=0-1,2-3"}):
            assert_hidden(probe(url, d.tokens["ann"], headers=headers), d, "GET", kind)
            tried += 1
    probe.no_5xx()
    figure(
        f"{tried} requests with {len(JUNK_REFS)} junk refs x 3 kinds x ann/eve/nobody, "
        f"{len(UNKNOWN_KINDS)} unknown kinds, wrong kinds, a failed run, a missing poster and "
        f"files gone from storage: all 404; {probe.figure()}"
    )


# `str.isdigit()` is true for these, `int()` refuses them (superscripts, circled digits): a
# lookup by `isdigit()` then `int()` answered 500.
UNICODE_DIGIT_REFS = ["%C2%B2", "%C2%B9", "%E2%91%A0", "%E2%81%B0"]


@BOTH
@pytest.mark.parametrize("ref", UNICODE_DIGIT_REFS)
def test_unicode_digit_input_refs_are_404(
    client: TestClient, downloads: Downloads, ref: str
) -> None:
    probe = Probe(client)
    for token in (downloads.tokens["ann"], downloads.tokens["eve"]):
        assert_routed_404(probe(f"/api/media/input/{ref}", token), ref)
    probe.no_5xx()


# Past the 32-bit integer column PostgreSQL refuses the parameter ("integer out of range": a 500
# when these were looked up); SQLite finds nothing.
INPUT_IDS_PAST_INT32 = ["2147483648", "4294967296", "9999999999", "99999999999"]


@BOTH
def test_input_ids_past_int32_are_404(client: TestClient, downloads: Downloads) -> None:
    probe = Probe(client)
    for ref in INPUT_IDS_PAST_INT32:
        for token in (downloads.tokens["ann"], downloads.tokens["eve"]):
            assert_routed_404(probe(f"/api/media/input/{ref}", token), ref)
    probe.no_5xx()


def range_cases(size: int) -> list[tuple[str, Any, int | tuple[int, int]]]:
    """(what, the Range header's value, 416 | 200 | the (first, last) byte of a 206)."""
    s = size
    return [
        # Malformed, several ranges, past the end: 416.
        ("bare unit", "bytes", 416),
        ("empty set", "bytes=", 416),
        ("dash only", "bytes=-", 416),
        ("two dashes", "bytes=--", 416),
        ("letters", "bytes=a-b", 416),
        ("letter end", "bytes=0-a", 416),
        ("reversed", "bytes=5-1", 416),
        ("suffix of 0", "bytes=-0", 416),
        ("negative suffix", "bytes=--1", 416),
        ("negative range", "bytes=-5--1", 416),
        ("suffix with end", "bytes=-1-2", 416),
        ("negative end", "bytes=1--2", 416),
        ("three parts", "bytes=0-1-2", 416),
        ("double =", "bytes==0-1", 416),
        ("decimal", "bytes=1.5-2", 416),
        ("hex", "bytes=0x0-0x10", 416),
        ("exponent", "bytes=1e3-", 416),
        ("plus sign", "bytes=+1-2", 416),
        ("tab inside", "bytes=\t0-1", 416),
        ("trailing ;", "bytes=0-1;", 416),
        ("NUL", "bytes=0-1\x00", 416),
        ("two ranges", "bytes=0-1,2-3", 416),
        ("two ranges, space", "bytes=0-1, 2-3", 416),
        ("range and suffix", "bytes=0-0,-1", 416),
        ("trailing comma", "bytes=0-1,", 416),
        ("same range twice", "bytes=0-0,0-0", 416),
        ("1000 ranges", "bytes=" + ",".join(f"{i}-{i}" for i in range(1000)), 416),
        ("1000 overlapping", "bytes=" + ",".join("0-" for _ in range(1000)), 416),
        ("23-digit start", "bytes=99999999999999999999999-", 416),
        # A last-pos past the end means "to the end" (RFC 9110), however many digits it has.
        ("23-digit end", "bytes=0-99999999999999999999999", (0, s - 1)),
        ("23-digit suffix", "bytes=-99999999999999999999999", (0, s - 1)),
        ("19-digit start", "bytes=9999999999999999999-", 416),
        ("start = size", f"bytes={s}-", 416),
        ("start = size, end past", f"bytes={s}-{s + 10}", 416),
        ("start far past", f"bytes={s * 1000}-{s * 2000}", 416),
        # (Starlette's TestClient hands the app non-ASCII header bytes re-encoded as UTF-8.)
        ("superscript digits", b"bytes=\xb2-\xb3", 416),
        ("arabic-indic digits", "bytes=\u0660-\u0669".encode(), 416),
        ("fullwidth digits", "bytes=\uff10-\uff11".encode(), 416),
        ("fullwidth =", "bytes\uff1d0-1".encode(), 200),  # not "bytes" + "=": an unknown unit
        ("8 KB of zeros", "bytes=" + "0" * 8192 + "-", 416),
        ("8 KB end", "bytes=0-" + "9" * 8192, 416),
        ("8 KB of ranges", "bytes=" + "1-" * 4096, 416),
        # A unit other than bytes, or no unit: the header is ignored, the whole object.
        ("items unit", "items=0-1", 200),
        ("bits unit", "bits=0-7", 200),
        ("bytesx unit", "bytesx=0-1", 200),
        ("garbage", "garbage", 200),
        ("no unit", "=0-1", 200),
        ("no =", "bytes 0-1", 200),
        ("8 KB garbage", "x" * 8192, 200),
        ("latin-1 junk", b"\xff\xfe=0-1", 200),
        ("empty", "", 200),
        ("blank", "   ", 200),
        # Valid, at the edges: exactly these bytes.
        ("first byte", "bytes=0-0", (0, 0)),
        ("first two", "bytes=0-1", (0, 1)),
        ("last byte, open", f"bytes={s - 1}-", (s - 1, s - 1)),
        ("last byte, closed", f"bytes={s - 1}-{s - 1}", (s - 1, s - 1)),
        ("suffix 1", "bytes=-1", (s - 1, s - 1)),
        ("suffix = size", f"bytes=-{s}", (0, s - 1)),
        ("suffix past size", f"bytes=-{s + 1}", (0, s - 1)),
        ("suffix 19 digits", "bytes=-9999999999999999999", (0, s - 1)),
        ("open from 0", "bytes=0-", (0, s - 1)),
        ("whole, closed", f"bytes=0-{s - 1}", (0, s - 1)),
        ("end = size, clamped", f"bytes=0-{s}", (0, s - 1)),
        ("end 19 digits, clamped", "bytes=0-9999999999999999999", (0, s - 1)),
        ("end huge, clamped", f"bytes=1-{10**18}", (1, s - 1)),
        ("tail, clamped", f"bytes={s - 2}-{s * 5}", (s - 2, s - 1)),
        ("leading zeros", "bytes=00000-00001", (0, 1)),
        ("upper case unit", "BYTES=0-0", (0, 0)),
        ("spaces around", " bytes = 0 - 0 ", (0, 0)),
        ("8 KB of padding", "bytes=0-0" + " " * 8192, (0, 0)),
        ("trailing CR, stripped", "bytes=0-1\r", (0, 1)),
        ("middle", f"bytes={s // 2}-{s // 2 + 99}", (s // 2, s // 2 + 99)),
    ]


@BOTH
def test_range_headers_are_416_or_exact(
    client: TestClient, downloads: Downloads, figure: Any
) -> None:
    probe = Probe(client)
    d = downloads
    ann = d.tokens["ann"]
    by_outcome: Counter[str] = Counter()
    for kind, url in urls(d, "ann").items():
        stored = content_of(d, kind)
        size = len(stored)
        cases = range_cases(size)
        for what, value, expected in cases:
            for method in ("GET", "HEAD"):
                r = probe(url, ann, method, {"Range": value})
                where = (kind, what, method, r.status_code, r.headers.get("content-range"))
                if expected == 416:
                    assert r.status_code == 416, where
                    assert r.headers["content-range"] == f"bytes */{size}", where
                    assert r.content == b"", where
                elif expected == 200:
                    assert r.status_code == 200, where
                    assert "content-range" not in r.headers, where
                    assert r.headers["content-length"] == str(size), where
                    assert r.content == (stored if method == "GET" else b""), where
                else:
                    first, last = expected
                    assert r.status_code == 206, where
                    assert r.headers["content-range"] == f"bytes {first}-{last}/{size}", where
                    assert r.headers["content-length"] == str(last - first + 1), where
                    body = stored[first : last + 1] if method == "GET" else b""
                    assert r.content == body, where
                if method == "GET":
                    by_outcome[str(expected if isinstance(expected, int) else 206)] += 1
        # If-Range that is not the object's ETag: the Range is ignored, the whole object.
        etag = probe(url, ann).headers["etag"]
        for if_range in (
            "junk",
            "",
            '"other"',
            "W/" + etag,
            etag + "x",
            etag.strip('"'),
            "Wed, 21 Oct 2015 07:28:00 GMT",
            "x" * 8192,
        ):
            for value in ("bytes=0-9", "bytes=0-1,2-3", f"bytes={size}-"):
                r = probe(url, ann, headers={"Range": value, "If-Range": if_range})
                assert r.status_code == 200 and r.content == stored, (kind, if_range, value)
                assert "content-range" not in r.headers
                by_outcome["If-Range junk 200"] += 1
        r = probe(url, ann, headers={"Range": "bytes=0-9", "If-Range": etag})
        assert r.status_code == 206 and r.content == stored[:10]
        r = probe(url, ann, headers={"Range": "bytes=0-1,2-3", "If-Range": etag})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
        # If-None-Match: only the object's own ETag is a 304.
        for inm, status in (("junk", 200), ("*", 200), (f"{etag}, {etag}", 200), (etag, 304)):
            for headers in ({"If-None-Match": inm}, {"If-None-Match": inm, "Range": "bytes=0-0"}):
                r = probe(url, ann, headers=headers)
                want = 206 if status == 200 and "Range" in headers else status
                assert r.status_code == want, (kind, headers, r.status_code)
                if want == 304:
                    assert r.content == b""
        # Two Range header lines: an invalid request (Range is not a list field); the first one
        # is what the app reads.
        two = probe(url, ann, headers=[("Range", "bytes=0-1"), ("Range", "bytes=2-3")])
        assert two.status_code in (206, 416), two.status_code
        by_outcome[f"two Range lines {two.status_code}"] += 1
    probe.no_5xx()
    table = Counter(e if isinstance(e, int) else 206 for _, _, e in range_cases(1000))
    figure(
        f"{sum(table.values())} Range headers ({table[416]} -> 416 bytes */size, {table[200]} -> "
        f"200 unit ignored, {table[206]} -> 206 exact bytes) x result/poster/input x GET/HEAD; "
        f"If-Range junk -> 200 whole x {by_outcome['If-Range junk 200']}; two Range lines -> "
        f"{sorted(k for k in by_outcome if k.startswith('two'))}; {probe.figure()}"
    )


@BOTH
def test_a_deleted_tasks_media_is_gone_for_everyone(
    client: TestClient, downloads: Downloads, storage_root: Path, figure: Any
) -> None:
    probe = Probe(client)
    d = downloads
    anns = urls(d, "ann")
    assert all(probe(url, d.tokens["ann"]).status_code == 200 for url in anns.values())
    stored_before = sorted(p for p in storage_root.rglob("*") if p.is_file())
    assert len(stored_before) == 6  # result, poster, input of each user

    assert uploads.delete_task(d.ids["ann"], d.task_ids["ann"]) == 3

    left = sorted(p.relative_to(storage_root).as_posix() for p in storage_root.rglob("*"))
    files = [p for p in left if (storage_root / p).is_file()]
    assert sorted(files) == sorted(d.keys["eve"]), files
    assert not [p for p in left if d.task_ids["ann"] in p and (storage_root / p).is_file()]
    hidden = 0
    for who in ("ann", "eve", None):
        token = d.tokens[who] if who else None
        for kind, url in anns.items():
            for method in ("GET", "HEAD"):
                for headers in ({}, {"Range": "bytes=0-0"}, {"Range": f"bytes={len(d.content)}-"}):
                    r = probe(url, token, method, headers)
                    assert_hidden(r, d, method, (who, kind, headers))
                    hidden += 1
    download = probe(f"/api/runs/{d.run_id}/result", d.tokens["ann"])
    assert download.status_code == 404
    # Eve's task is untouched.
    for kind, url in urls(d, "eve").items():
        r = probe(url, d.tokens["eve"])
        assert r.status_code == 200 and r.content == content_of(d, kind)
    probe.no_5xx()
    figure(
        f"ann's task deleted: its 3 files gone from storage, eve's 3 kept; {hidden} requests for "
        f"its result/poster/input (ann, eve, nobody x GET/HEAD x 3 Range headers) all 404; "
        f"{probe.figure()}"
    )
