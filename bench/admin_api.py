"""Admin API throughput: `PUT /api/internal/balance` with 50 concurrent clients, req/s and p50/p99.

The server is `vgen_app.api.app.create_api()` under uvicorn (1 worker, loopback, free port) in a
subprocess, on a temp migrated SQLite DB, ADMIN_TOKEN=bench-token, BCRYPT_ROUNDS=4. Floor, measured
in the same run against the same server: `GET /api/bench/noop`, a bare async route added by a
wrapper module written to a temp dir (the app is not edited). Client: asyncio + httpx.AsyncClient,
50 workers, --requests per measurement, time cap per measurement; floor and PUT runs interleaved,
medians of --reps. Each PUT is `{"userID": <id>, "diff": 1}` (a credit: never 409).

    .venv/bin/python bench/admin_api.py [--requests 2000] [--concurrency 50] [--reps 3] [--profile 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, free_port, median, migrated, percentile, temp_sqlite_url, use_database

TOKEN = "bench-token"
TIME_CAP_S = 60.0

WRAPPER = """
from vgen_app.api.app import create_api


def app():
    api = create_api()

    @api.get("/api/bench/noop")
    async def noop() -> dict:
        return {"ok": True}

    return api
"""


def start_server(db_url: str, port: int, tmp: Path) -> tuple[subprocess.Popen, Path]:
    (tmp / "bench_wrapper.py").write_text(WRAPPER)
    env = dict(
        os.environ,
        ADMIN_TOKEN=TOKEN,
        DATABASE_URL=db_url,
        BCRYPT_ROUNDS="4",
        PYTHONPATH=os.pathsep.join([str(tmp), str(ROOT)]),
    )
    log = tmp / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench_wrapper:app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(tmp), stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/bench/noop", timeout=1).status_code == 200:
                return proc, log
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


async def load(base: str, kind: str, uid: str, total: int, concurrency: int) -> dict:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    remaining = [total]
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=30, headers=headers
    ) as client:
        start = time.perf_counter()
        deadline = start + TIME_CAP_S

        async def worker() -> None:
            while remaining[0] > 0 and time.perf_counter() < deadline:
                remaining[0] -= 1
                t0 = time.perf_counter()
                if kind == "put":
                    r = await client.put("/api/internal/balance", json={"userID": uid, "diff": 1})
                else:
                    r = await client.get("/api/bench/noop")
                latencies.append(time.perf_counter() - t0)
                statuses[r.status_code] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        secs = time.perf_counter() - start
    return {
        "n": len(latencies),
        "secs": secs,
        "rps": len(latencies) / secs,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "statuses": dict(statuses),
        "capped": remaining[0] > 0,
    }


def profile(pid: int, seconds: int, out: Path, base: str, uid: str, concurrency: int) -> None:
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
    end = time.time() + seconds
    while time.time() < end and rec.poll() is None:
        asyncio.run(load(base, "put", uid, 500, concurrency))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--profile", type=int, default=0, help="seconds of py-spy on the server after the runs"
    )
    args = parser.parse_args()
    assert (
        args.requests <= 20_000
        and args.reps <= 7
        and args.concurrency <= 200
        and args.profile <= 30
    )

    import logging

    logging.disable(logging.INFO)
    tmp = Path(tempfile.mkdtemp(prefix="vgen-bench-admin-"))
    url = migrated(temp_sqlite_url("admin"))
    use_database(url)
    from tests.helpers import make_user
    from vgen_app.db import dispose_engines, session_scope

    with session_scope() as db:
        uid = make_user(db, "bench-admin@example.com")
    dispose_engines()

    port = free_port()
    proc, log = start_server(url, port, tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        print(
            f"server: uvicorn bench_wrapper:app --factory, 1 worker, pid {proc.pid}, {base}, sqlite {url}"
        )
        # warm-up (connections, imports, pool, first-statement caches)
        asyncio.run(load(base, "noop", uid, 200, args.concurrency))
        asyncio.run(load(base, "put", uid, 200, args.concurrency))
        floors, puts = [], []
        for _ in range(args.reps):
            floors.append(asyncio.run(load(base, "noop", uid, args.requests, args.concurrency)))
            puts.append(asyncio.run(load(base, "put", uid, args.requests, args.concurrency)))
        for name, runs in (
            ("floor GET /api/bench/noop", floors),
            ("PUT /api/internal/balance", puts),
        ):
            print(
                f"{name}: {args.concurrency} clients, {args.requests} requests x {args.reps} runs"
            )
            print(
                f"  req/s  median {median([r['rps'] for r in runs]):8.1f}   runs {[round(r['rps'], 1) for r in runs]}"
            )
            print(
                f"  p50 ms median {median([r['p50'] for r in runs]):8.1f}   runs {[round(r['p50'], 1) for r in runs]}"
            )
            print(
                f"  p99 ms median {median([r['p99'] for r in runs]):8.1f}   runs {[round(r['p99'], 1) for r in runs]}"
            )
            print(
                f"  statuses {[r['statuses'] for r in runs]} capped {[r['capped'] for r in runs]}"
            )
        ratio = median([r["rps"] for r in puts]) / median([r["rps"] for r in floors])
        print(
            f"ratio PUT/floor req/s: {ratio:.3f}  (target >= 0.5: {'HOLDS' if ratio >= 0.5 else 'MISSED'})"
        )
        # the credits all landed, once each
        use_database(url)
        from vgen_app.services import ledger

        with session_scope() as db:
            bal = ledger.balance_of(db, uid)
        sent = sum(sum(r["statuses"].values()) for r in puts) + 200
        print(
            f"balance after runs: {bal} (PUTs answered: {sent}, all 200: "
            f"{all(set(r['statuses']) == {200} for r in puts)})"
        )
        if args.profile:
            profile(proc.pid, args.profile, tmp / "pyspy.raw", base, uid, args.concurrency)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        err = log.read_text().strip()
        if err:
            print("server log tail:", err[-1500:])


if __name__ == "__main__":
    main()
