"""Admin API and middleware cost under `wrk` (a C load generator, not the bottleneck), 50 connections.

Rows, each a median of --reps runs of --seconds, interleaved, all in one run on one machine:
- floor: a bare ASGI app (no framework) under the same server (uvicorn, 1 worker) — and the
  proof that wrk is not the bottleneck: it drives the floor many times faster than the subject;
- the app's no-op route: `GET /api/bench/noop`, added to `create_api()` by a wrapper module
  written to a temp dir (the app is not edited), through every middleware of the app (security
  headers, loopback redirect, request log, body cap, error mapping);
- `PUT /api/internal/balance` (`{"userID": <id>, "diff": 1}`: a credit, never 409, one ledger
  row and one audit row per call) on SQLite and on PostgreSQL.
Targets (issue P): no-op route >= 0.5x the bare app; PUT p99 < 50 ms and >= 0.1x the bare app on
both databases. The balance afterwards must equal the ledger's sum and the number of PUTs answered.

    .venv/bin/python bench/admin_api.py [--seconds 10] [--reps 3] [--connections 50] [--profile 10]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, median, migrated, temp_postgres, temp_sqlite_url, use_database
from loadgen import bare_asgi_server, ensure_wrk, fmt, server, uvicorn_cmd, wrk

TOKEN = "bench-token"

WRAPPER = """
from vgen_app.api.app import create_api


def app():
    api = create_api()

    @api.get("/api/bench/noop")
    async def noop() -> dict:
        return {"ok": True}

    # The same route first in the table (the middleware alone) and last (plus FastAPI's scan of
    # every included router before it).
    api.router.routes.insert(0, api.router.routes.pop())

    @api.get("/api/bench/noop-last")
    async def noop_last() -> dict:
        return {"ok": True}

    return api
"""


def subject_env(db_url: str) -> dict[str, str]:
    return dict(os.environ, ADMIN_TOKEN=TOKEN, DATABASE_URL=db_url, BCRYPT_ROUNDS="4")


def seeded(url: str) -> str:
    """A migrated database with one user; that user's id."""
    migrated(url)
    use_database(url)
    from tests.helpers import make_user
    from vgen_app.db import dispose_engines, session_scope

    with session_scope() as db:
        uid = make_user(db, "bench-admin@example.com")
    dispose_engines()
    return uid


def check_ledger(url: str, uid: str) -> str:
    use_database(url)
    from sqlalchemy import func
    from sqlmodel import select

    from vgen_app.db import dispose_engines, session_scope
    from vgen_app.models import LedgerEntry, Outcome
    from vgen_app.services import ledger

    with session_scope() as db:
        bal = ledger.balance_of(db, uid)
        total = db.exec(
            select(func.coalesce(func.sum(LedgerEntry.diff), 0)).where(
                LedgerEntry.user_id == uid, LedgerEntry.outcome == Outcome.APPLIED
            )
        ).one()
        rows = db.exec(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.user_id == uid)
        ).one()
    dispose_engines()
    return f"balance {bal}, ledger sum {total}, ledger rows {rows} ({'equal' if bal == total else 'MISMATCH'})"


def profile(pid: int, seconds: int, out: Path, url: str, body: str, connections: int) -> None:
    """py-spy record (raw collapsed stacks) on the server during a PUT load; print the top frames."""
    spy = Path(sys.executable).parent / "py-spy"
    rec = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
            "--threads",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.0)
    wrk(url, method="PUT", body=body, headers=HEADERS, connections=connections, seconds=seconds)
    out_text = rec.communicate(timeout=60)[0].decode(errors="replace")
    if not out.exists():
        print("py-spy failed:", out_text[-1000:])
        return
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        total += c
        for f in set(frames):
            inclusive[f] += c
        leaf[frames[-1]] += c
    print(f"py-spy: {total} samples over {seconds}s (all threads, incl. idle) -> {out}")
    print("  top inclusive frames:")
    for f, c in inclusive.most_common(40):
        print(f"    {100 * c / total:5.1f}%  {f}")
    print("  top leaf frames:")
    for f, c in leaf.most_common(20):
        print(f"    {100 * c / total:5.1f}%  {f}")


HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def summary(name: str, runs: list[dict]) -> dict:
    med = {k: median([r[k] for r in runs]) for k in ("rps", "p50", "p90", "p99")}
    med.update(non2xx=sum(r["non2xx"] for r in runs), errors=sum(r["errors"] for r in runs))
    print(f"{name}: median of {len(runs)}: {fmt(med)}")
    for r in runs:
        print(f"    run: {fmt(r)}")
    return med


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--profile", type=int, default=0, help="seconds of py-spy on the server (last database)"
    )
    args = parser.parse_args()
    assert args.seconds <= 60 and args.reps <= 7 and args.connections <= 200 and args.profile <= 30

    import logging

    logging.disable(logging.INFO)
    ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="vgen-bench-admin-"))
    (tmp / "bench_wrapper.py").write_text(WRAPPER)
    c, secs = args.connections, args.seconds
    print(
        f"load: wrk -t1 -c{c} -d{secs:.0f}s; server: uvicorn, 1 worker, loopback; {args.reps} reps"
    )
    results: dict[str, list[dict]] = collections.defaultdict(list)
    with contextlib.ExitStack() as stack:
        bare = stack.enter_context(bare_asgi_server(tmp))
        subjects = {}
        for kind in args.databases.split(","):
            url = (
                temp_sqlite_url("admin")
                if kind == "sqlite"
                else stack.enter_context(temp_postgres())
            )
            uid = seeded(url)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            proc = stack.enter_context(
                server(
                    uvicorn_cmd("bench_wrapper:app", port, factory=True),
                    tmp,
                    subject_env(url),
                    base + "/api/bench/noop",
                )
            )
            subjects[kind] = (url, uid, base, proc)
        body = {k: json.dumps({"userID": v[1], "diff": 1}) for k, v in subjects.items()}
        # warm-up: connections, imports, pools, statement caches
        wrk(bare + "/", connections=c, seconds=2)
        for kind, (_, _, base, _) in subjects.items():
            wrk(base + "/api/bench/noop", connections=c, seconds=2)
            wrk(
                base + "/api/internal/balance",
                method="PUT",
                body=body[kind],
                headers=HEADERS,
                connections=c,
                seconds=2,
            )
        first = next(iter(subjects.values()))[2]
        for _ in range(args.reps):
            results["bare"].append(wrk(bare + "/", connections=c, seconds=secs))
            results["noop"].append(wrk(first + "/api/bench/noop", connections=c, seconds=secs))
            results["noop-last"].append(
                wrk(first + "/api/bench/noop-last", connections=c, seconds=secs)
            )
            for kind, (_, _, base, _) in subjects.items():
                results[kind].append(
                    wrk(
                        base + "/api/internal/balance",
                        method="PUT",
                        body=body[kind],
                        headers=HEADERS,
                        connections=c,
                        seconds=secs,
                    )
                )
        floor = summary("floor: bare ASGI app, GET /", results["bare"])
        noop = summary(
            "app no-op route GET /api/bench/noop (every middleware, first in the route table)",
            results["noop"],
        )
        last = summary(
            "the same route last in the route table (/api/bench/noop-last)", results["noop-last"]
        )
        print(f"  last / bare: {last['rps'] / floor['rps']:.3f}x")
        print(
            f"  no-op / bare: {noop['rps'] / floor['rps']:.3f}x (target >= 0.5: "
            f"{'HOLDS' if noop['rps'] / floor['rps'] >= 0.5 else 'MISSED'})"
        )
        time.sleep(2)  # the last PUTs wrk sent finish before the ledgers are read
        for kind, (url, uid, _, proc) in subjects.items():
            put = summary(f"PUT /api/internal/balance on {kind}", results[kind])
            ratio = put["rps"] / floor["rps"]
            ok = ratio >= 0.1 and put["p99"] < 50 and put["non2xx"] == 0
            print(
                f"  PUT / bare: {ratio:.3f}x, p99 {put['p99']:.1f} ms (target >= 0.1x and p99 < 50 ms: "
                f"{'HOLDS' if ok else 'MISSED'})"
            )
            print(f"  {kind}: {check_ledger(url, uid)}")
        if args.profile:
            kind, (_, _, base, proc) = list(subjects.items())[-1]
            profile(
                proc.pid,
                args.profile,
                tmp / "pyspy.raw",
                base + "/api/internal/balance",
                body[kind],
                c,
            )


if __name__ == "__main__":
    main()
