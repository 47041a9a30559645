"""UI event round-trips on the real app (loopback only, bounded): two figures, each against a floor
measured in the same run on the same server.

The server is the app as `make run` starts it (`reflex run --env prod`: production build, one
granian worker, SQLite, the in-memory state manager; bench/reflex_client.py `AppServer`) with its
own port, database, storage and frontend build folder (`.web-bench`). Clients are browser tabs
speaking Reflex's event protocol over `/_event` (python-socketio, `ReflexClient`), each tab of a
logged-in user carrying its own HttpOnly session cookie in the socket handshake. Users, sessions
and tasks are made directly through `vgen_app.services` (tests/helpers.py).

A. p95 event round-trip, N connected clients (default 200), each its own user:
   SUBJECT  `DashboardState.on_load` (the dashboard's list refresh: session check + task list, two
            database round trips; each user owns --tasks tasks) - or `TokensState.on_load`
            (balance + history + chart) with --subject tokens.
   FLOOR    `ProbeState.noop` (vgen_app/ui/probe.py): writes one int back, nothing else.
   Two load shapes, floor and subject interleaved, order alternating per round:
   * paced: every client loops "send, wait for the update, think U(0, 2*think) ms" (--think-ms,
     default 5000: each tab sends an event every ~5 s, ~40 events/s from 200 tabs), --events per
     client per phase;
   * burst: all N clients send at the same instant, --bursts times (a reload of every tab at once:
     p95 is then mostly the time to drain the queue, i.e. the per-event cost).
   Round trip = emit on the socket -> the state update that carries the handler's result.
B. p95 no-op latency while --logins (default 20) real logins run at once vs the same with no
   logins: --probe-clients tabs send `ProbeState.noop` in a loop (think U(0, 2*probe-think));
   the 20 login tabs sit on /login and submit `LoginState.submit` together (the real handler:
   rate-limit checks, bcrypt at the server's cost, BCRYPT_ROUNDS=12 by default, login ticket);
   a login is done when its `_call_script` (the redirect to the session route) arrives.
   Windows alternate: [no logins, --window s] / [20 logins, until the last one is done].
   --login-probe dashboard swaps the no-op probe for DashboardState.on_load (to see database work
   queueing behind bcrypt in the shared thread pool).

--profile S records py-spy (200 Hz, all threads) on the backend worker for S seconds under each
workload after the measurements and prints the top frames.

    .venv/bin/python bench/event_roundtrip.py              # A + B, ~6-8 min on a busy 2-CPU box
    .venv/bin/python bench/event_roundtrip.py --only a --clients 50 --rounds 1     # quick
    .venv/bin/python bench/event_roundtrip.py --only b --login-rounds 2            # quick
    .venv/bin/python bench/event_roundtrip.py --only none --profile 15             # py-spy only
Options to try a change without touching this checkout: --app-root DIR (run `make run` from a copy)
and --server-env K=V (extra environment for the server).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import percentile
from reflex_client import (
    AppServer,
    ReflexClient,
    changed,
    connect_all,
    cpu_seconds,
    frontend_event,
    pyspy_start,
    pyspy_summary,
    session_cookie_for,
    use_app_settings,
)

TARGET = 2.0
# --subject: (event, page the tabs sit on, Kinds method)
SUBJECTS = {
    "dashboard": ("DashboardState.on_load", "/", "dashboard_load"),
    "tokens": ("TokensState.on_load", "/tokens", "tokens_load"),
    "task": ("TaskState.on_load", "/tasks/{task}", "task_load"),
    "session": ("SessionState.require_login", "/tasks/new", "session_check"),
}


@dataclass
class Phase:
    name: str
    lat: list[float] = field(default_factory=list)  # seconds
    wall: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    errors: int = 0

    def merge(self, other: Phase) -> None:
        self.lat += other.lat
        self.wall += other.wall
        self.server_cpu += other.server_cpu
        self.client_cpu += other.client_cpu
        self.errors += other.errors


def pct(lat: list[float], q: float) -> float:
    return percentile(lat, q) * 1000 if lat else float("nan")


def row(p: Phase) -> str:
    rate = len(p.lat) / p.wall if p.wall else float("nan")
    return (
        f"{p.name:<44} n={len(p.lat):>6} {rate:6.0f}/s  p50 {pct(p.lat, 50):8.1f}  p95 {pct(p.lat, 95):8.1f}  "
        f"p99 {pct(p.lat, 99):8.1f} ms   server CPU {100 * p.server_cpu / max(p.wall, 1e-9):4.0f}%"
        f" ({1000 * p.server_cpu / max(len(p.lat), 1):5.2f} ms/event)"
        f"  client CPU {100 * p.client_cpu / max(p.wall, 1e-9):4.0f}%"
        + (f"  errors {p.errors}" if p.errors else "")
    )


def verdict(ratio: float) -> str:
    return "HOLDS" if ratio <= TARGET else "MISSED"


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Meter:
    """Wall time and server/client CPU over a block."""

    def __init__(self, pid: int, phase: Phase):
        self.pid, self.phase = pid, phase

    def __enter__(self) -> Self:
        self.t0, self.s0, self.c0 = time.perf_counter(), cpu_seconds(self.pid), client_cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.phase.wall += time.perf_counter() - self.t0
        self.phase.server_cpu += cpu_seconds(self.pid) - self.s0
        self.phase.client_cpu += client_cpu() - self.c0


# --- workloads ----------------------------------------------------------------------------------


class Kinds:
    def __init__(self) -> None:
        from vgen_app.ui.auth import LoginState
        from vgen_app.ui.dashboard import DashboardState
        from vgen_app.ui.probe import ProbeState
        from vgen_app.ui.session import SessionState
        from vgen_app.ui.task import TaskState
        from vgen_app.ui.tokens import TokensState

        self.probe = ProbeState.get_full_name()
        self.dashboard = DashboardState.get_full_name()
        self.tokens = TokensState.get_full_name()
        self.task = TaskState.get_full_name()
        self.login = LoginState.get_full_name()
        self.session = SessionState.get_full_name()
        self.seq = 0

    async def noop(self, c: ReflexClient) -> float:
        self.seq += 1
        seq = self.seq
        return await c.call(
            f"{self.probe}.noop",
            {"seq": seq},
            until=changed(self.probe, "probe_seq", lambda v: v == seq),
        )

    async def dashboard_load(self, c: ReflexClient) -> float:
        return await c.call(f"{self.dashboard}.on_load", until=changed(self.dashboard, "task_rows"))

    async def session_check(self, c: ReflexClient) -> float:
        return await c.call(
            f"{self.session}.require_login", until=changed(self.session, "authenticated")
        )

    async def task_load(self, c: ReflexClient) -> float:
        return await c.call(f"{self.task}.on_load", until=changed(self.task, "task_name"))

    async def tokens_load(self, c: ReflexClient) -> float:
        return await c.call(f"{self.tokens}.on_load", until=changed(self.tokens, "history_rows"))

    async def login_submit(self, c: ReflexClient, email: str, password: str) -> float:
        return await c.call(
            f"{self.login}.submit",
            {"form": {"email": email, "password": password}},
            until=lambda u: (
                frontend_event("_call_script")(u) or changed(self.login, "login_error", bool)(u)
            ),
        )


async def paced(clients, call, events: int, think: float, phase: Phase, pid: int) -> None:
    async def one(c: ReflexClient) -> None:
        await asyncio.sleep(random.uniform(0, think))  # no synchronized start
        for _ in range(events):
            try:
                phase.lat.append(await call(c))
            except TimeoutError:
                phase.errors += 1
            await asyncio.sleep(random.uniform(0, 2 * think))

    with Meter(pid, phase):
        await asyncio.gather(*(one(c) for c in clients))


VERBOSE = False  # --verbose: one line per burst


async def burst(clients, call, bursts: int, phase: Phase, pid: int) -> None:
    for _ in range(bursts):
        one = Phase(phase.name)
        with Meter(pid, one):
            res = await asyncio.gather(*(call(c) for c in clients), return_exceptions=True)
        one.lat = [r for r in res if isinstance(r, float)]
        one.errors = sum(1 for r in res if not isinstance(r, float))
        if VERBOSE:
            print(f"    {time.strftime('%H:%M:%S')} burst {row(one)}")
        phase.merge(one)
        await asyncio.sleep(0.3)


# --- setup --------------------------------------------------------------------------------------


# Each bench user's first task (the task page's subject), by user id.
FIRST_TASK: dict[str, str] = {}


def make_users(
    n: int, prefix: str, tasks_each: int, rounds: int, runs_each: int = 0
) -> list[tuple[str, str, str]]:
    """n activated users with a session each: (email, user_id, cookie). Password hashes at
    `rounds` (the bench process's BCRYPT_ROUNDS), tasks_each tasks each with runs_each
    succeeded runs each (its dashboard rows, its task page's run list)."""
    from vgen_app import catalog
    from vgen_app.config import reset_settings
    from vgen_app.db import session_scope
    from vgen_app.models import Run, RunStatus
    from vgen_app.services import tasks

    os.environ["BCRYPT_ROUNDS"] = str(rounds)
    reset_settings()
    from vgen_app import clock

    models = [m.id for m in catalog.models()]
    now = clock.now()
    out = []
    for i in range(n):
        email = f"{prefix}{i}@example.com"
        user_id, cookie = session_cookie_for(email)
        with session_scope() as db:
            for k in range(tasks_each):
                model = models[k % len(models)]
                task = tasks.create_task(db, user_id, model, f"Bench task {k + 1}")
                FIRST_TASK.setdefault(user_id, task.id)
                for a in range(1, runs_each + 1):
                    db.add(
                        Run(
                            task_id=task.id,
                            owner_id=user_id,
                            attempt=a,
                            status=RunStatus.SUCCEEDED,
                            price=10,
                            model=model,
                            inputs={},
                            # its "finished" mail already sent: the worker has nothing to do
                            finished_mail_at=now,
                        )
                    )
            db.commit()
        out.append((email, user_id, cookie))
    return out


# --- A ------------------------------------------------------------------------------------------


async def part_a(server: AppServer, pid: int, args, kinds: Kinds) -> dict:
    print(f"\n== A. {args.clients} connected clients: {SUBJECTS[args.subject][0]} vs no-op ==")
    t0 = time.perf_counter()
    users = make_users(args.clients, "tab", args.tasks, 4, args.runs)
    print(f"made {len(users)} users (+{args.tasks} tasks each) in {time.perf_counter() - t0:.1f} s")
    clients = [ReflexClient(server.base, cookie=c, origin=server.url) for _, _, c in users]
    name, page, method = SUBJECTS[args.subject]
    t0 = time.perf_counter()
    hyd = await connect_all(
        clients, lambda i: page.format(task=FIRST_TASK.get(users[i][1], "")), concurrency=20
    )
    print(
        f"connected + hydrated {len(clients)} tabs on {page} in {time.perf_counter() - t0:.1f} s "
        f"(hydrate p50 {pct(hyd, 50):.0f} ms, p95 {pct(hyd, 95):.0f} ms)"
    )
    session_key = "reflex___state____state.vgen_app___ui___session____session_state"
    logged_in = sum(1 for c in clients if c.get(session_key, "authenticated"))
    print(f"tabs whose session checked out on hydrate (authenticated): {logged_in}/{len(clients)}")
    assert logged_in == len(clients), "the session cookie did not reach the handlers"
    subject = getattr(kinds, method)
    calls = {"floor": kinds.noop, "subject": subject}
    names = {"floor": "ProbeState.noop", "subject": name}
    # warm-up: every tab once each way
    for k in ("floor", "subject"):
        await burst(clients, calls[k], 1, Phase("warm-up"), pid)
    # The client's own garbage collection stays out of the timed phases: 200 tabs' mirrored
    # states make a full collection of this process take tens of ms, which stalls every tab's
    # receive loop at once and shows up as server latency (a burst with twice the client CPU).
    gc.disable()
    out = {}
    for shape in ("paced", "burst"):
        phases = {k: Phase(f"{shape} {names[k]}") for k in calls}
        for r in range(args.rounds):
            order = ["floor", "subject"] if r % 2 == 0 else ["subject", "floor"]
            for k in order:
                p = Phase(phases[k].name)
                if shape == "paced":
                    await paced(clients, calls[k], args.events, args.think_ms / 1000, p, pid)
                else:
                    await burst(clients, calls[k], args.bursts, p, pid)
                print(f"  round {r + 1} {row(p)}")
                phases[k].merge(p)
                gc.collect()  # between timed phases, not inside one (GC is off)
                await asyncio.sleep(0.5)
        out[shape] = phases
    gc.enable()
    for c in clients:
        await c.close()
    print(f"\nA. summary ({args.clients} clients, {args.rounds} rounds; latencies in ms)")
    for shape, phases in out.items():
        print("  " + row(phases["floor"]))
        print("  " + row(phases["subject"]))
        ratio = pct(phases["subject"].lat, 95) / pct(phases["floor"].lat, 95)
        print(
            f"  {shape}: p95 subject / p95 floor = {ratio:.2f}x  (target <= {TARGET}x: "
            f"{verdict(ratio)})"
        )
    return out


# --- B ------------------------------------------------------------------------------------------


async def part_b(server: AppServer, pid: int, args, kinds: Kinds) -> dict:
    print(
        f"\n== B. no-op latency while {args.logins} logins run at once (server bcrypt cost "
        f"{args.bcrypt_rounds}) =="
    )
    t0 = time.perf_counter()
    login_users = make_users(args.logins, "login", 0, args.bcrypt_rounds)
    probe_users = make_users(args.probe_clients, "probe", 3, 4)
    print(
        f"made {len(login_users)} login users (bcrypt cost {args.bcrypt_rounds}) and "
        f"{len(probe_users)} probe users in {time.perf_counter() - t0:.1f} s"
    )
    login_tabs = [ReflexClient(server.base, origin=server.url) for _ in login_users]
    probe_tabs = [ReflexClient(server.base, cookie=c, origin=server.url) for _, _, c in probe_users]
    await connect_all(login_tabs, "/login")
    await connect_all(probe_tabs, "/")
    probe_call = kinds.noop if args.login_probe == "noop" else kinds.dashboard_load
    probe_name = "ProbeState.noop" if args.login_probe == "noop" else "DashboardState.on_load"
    samples: list[tuple[float, float]] = []  # (sent at, latency)
    stop = asyncio.Event()
    think = args.probe_think_ms / 1000

    async def prober(c: ReflexClient) -> None:
        await asyncio.sleep(random.uniform(0, think))
        while not stop.is_set():
            t = time.perf_counter()
            try:
                samples.append((t, await probe_call(c)))
            except TimeoutError:
                samples.append((t, float("inf")))
            await asyncio.sleep(random.uniform(0, 2 * think))

    base_ph, login_ph = (
        Phase(f"{probe_name}, no logins"),
        Phase(f"{probe_name}, {args.logins} logins"),
    )
    windows: list[tuple[str, float, float]] = []
    login_lat: list[float] = []
    login_fail = 0
    probers = [asyncio.create_task(prober(c)) for c in probe_tabs]
    await asyncio.sleep(2.0)  # probes warm up
    last_login_window = args.window
    for r in range(args.login_rounds):
        order = ["base", "login"] if r % 2 == 0 else ["login", "base"]
        for kind in order:
            if kind == "base":
                ph = Phase("")
                with Meter(pid, ph):
                    s = time.perf_counter()
                    await asyncio.sleep(max(args.window, last_login_window))
                    e = time.perf_counter()
                base_ph.server_cpu += ph.server_cpu
                base_ph.client_cpu += ph.client_cpu
                base_ph.wall += ph.wall
            else:
                ph = Phase("")
                with Meter(pid, ph):
                    s = time.perf_counter()
                    res = await asyncio.gather(
                        *(
                            kinds.login_submit(tab, email, "correct horse")
                            for tab, (email, _, _) in zip(login_tabs, login_users, strict=True)
                        ),
                        return_exceptions=True,
                    )
                    e = time.perf_counter()
                login_ph.server_cpu += ph.server_cpu
                login_ph.client_cpu += ph.client_cpu
                login_ph.wall += ph.wall
                last_login_window = e - s
                ok = [x for x in res if isinstance(x, float)]
                errors = [tab.get(kinds.login, "login_error") for tab in login_tabs]
                bad = len(res) - len(ok) + sum(1 for x in errors if x)
                login_fail += bad
                login_lat += ok
                print(
                    f"  round {r + 1}: {len(ok)} logins in {e - s:.2f} s (p50 "
                    f"{pct(ok, 50):.0f} ms, max {max(ok) * 1000 if ok else float('nan'):.0f} ms)"
                    + (f", {bad} FAILED: {[x for x in errors if x][:2]}" if bad else "")
                )
                # a fresh page for the next round, as after a failed/finished login
                for tab in login_tabs:
                    tab.state.get(kinds.login, {}).pop("login_error_rx_state_", None)
            windows.append((kind, s, e))
            await asyncio.sleep(1.0)  # settle; samples sent in between are not counted
    stop.set()
    await asyncio.gather(*probers)
    for c in probe_tabs + login_tabs:
        await c.close()
    for t, lat in samples:
        for kind, s, e in windows:
            if s <= t <= e:
                (base_ph if kind == "base" else login_ph).lat.append(lat)
                break
    for ph in (base_ph, login_ph):
        ph.errors = sum(1 for x in ph.lat if x == float("inf"))
    print(
        f"\nB. summary ({args.login_rounds} rounds, {args.probe_clients} probe tabs, think "
        f"U(0, {2 * args.probe_think_ms:.0f}) ms; latencies in ms)"
    )
    print("  " + row(base_ph))
    print("  " + row(login_ph))
    print(
        f"  logins: n={len(login_lat)} p50 {pct(login_lat, 50):.0f} ms, p95 "
        f"{pct(login_lat, 95):.0f} ms, failed {login_fail}"
    )
    ratio = pct(login_ph.lat, 95) / pct(base_ph.lat, 95)
    print(
        f"  p95 with logins / p95 without = {ratio:.2f}x  (target <= {TARGET}x: {verdict(ratio)})"
    )
    return {"base": base_ph, "login": login_ph, "ratio": ratio}


# --- profiles -----------------------------------------------------------------------------------


async def profiles(server: AppServer, pid: int, args, kinds: Kinds, tmp: Path) -> None:
    print(f"\n== py-spy on the backend worker (pid {pid}), {args.profile} s per workload ==")
    users = make_users(20, "prof", args.tasks, 4, args.runs)
    tabs = [ReflexClient(server.base, cookie=c, origin=server.url) for _, _, c in users]
    page = SUBJECTS[args.subject][1]
    await connect_all(tabs, lambda i: page.format(task=FIRST_TASK.get(users[i][1], "")))
    subject = getattr(kinds, SUBJECTS[args.subject][2])
    for name, call in (("noop", kinds.noop), (args.subject, subject)):
        out = tmp / f"pyspy-{name}.raw"
        rec = pyspy_start(pid, args.profile, out)
        await asyncio.sleep(1.0)
        end = time.perf_counter() + args.profile - 1.5
        ph = Phase(name)
        while time.perf_counter() < end:
            await burst(tabs, call, 1, ph, pid)
        rec.communicate(timeout=120)
        print(f"\n-- {name}, 20 tabs back to back: {row(ph)}")
        print(pyspy_summary(out))
    # logins: the 20 login users of part B if it ran, else fresh ones
    login_users = make_users(args.logins, "proflogin", 0, args.bcrypt_rounds)
    login_tabs = [ReflexClient(server.base, origin=server.url) for _ in login_users]
    await connect_all(login_tabs, "/login")
    out = tmp / "pyspy-logins.raw"
    rec = pyspy_start(pid, args.profile, out, idle=True)
    await asyncio.sleep(1.0)
    end = time.perf_counter() + args.profile - 1.5
    stop = asyncio.Event()
    noop_lat: list[float] = []

    async def prober(c: ReflexClient) -> None:
        while not stop.is_set():
            noop_lat.append(await kinds.noop(c))
            await asyncio.sleep(random.uniform(0, 0.2))

    probers = [asyncio.create_task(prober(c)) for c in tabs[:10]]
    while time.perf_counter() < end:
        await asyncio.gather(
            *(
                kinds.login_submit(t, e, "correct horse")
                for t, (e, _, _) in zip(login_tabs, login_users, strict=True)
            )
        )
    stop.set()
    await asyncio.gather(*probers)
    rec.communicate(timeout=120)
    print(
        f"\n-- {args.logins} logins at once, repeated, + 10 no-op probe tabs (idle frames kept): "
        f"no-op p95 {pct(noop_lat, 95):.1f} ms"
    )
    print(pyspy_summary(out, top=40))
    for c in tabs + login_tabs:
        await c.close()


# --- main ---------------------------------------------------------------------------------------


async def run(server: AppServer, args, tmp: Path) -> None:
    pids = server.backend_pids()
    pid = pids[0]
    print(f"backend worker pid(s): {pids} (CPU figures are for pid {pid})")
    kinds = Kinds()
    results = {}
    if args.only in ("", "a"):
        results["a"] = await part_a(server, pid, args, kinds)
    if args.only in ("", "b"):
        results["b"] = await part_b(server, pid, args, kinds)
    if args.profile:
        await profiles(server, pid, args, kinds, tmp)
    print("\n== summary ==")
    if "a" in results:
        for shape, ph in results["a"].items():
            f, s = ph["floor"], ph["subject"]
            ratio = pct(s.lat, 95) / pct(f.lat, 95)
            print(
                f"A {shape:<5} {args.clients} clients: p95 {s.name.split(' ', 1)[1]} "
                f"{pct(s.lat, 95):.1f} ms vs floor {pct(f.lat, 95):.1f} ms = {ratio:.2f}x "
                f"(<= {TARGET}x: {verdict(ratio)})"
            )
    if "b" in results:
        b = results["b"]
        print(
            f"B {args.logins} logins at once: p95 {b['login'].name.split(',')[0]} "
            f"{pct(b['login'].lat, 95):.1f} ms vs {pct(b['base'].lat, 95):.1f} ms without = "
            f"{b['ratio']:.2f}x (<= {TARGET}x: {verdict(b['ratio'])})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument(
        "--subject",
        choices=sorted(SUBJECTS),
        default="dashboard",
        help="session: SessionState.require_login (the session check alone, one DB call)",
    )
    ap.add_argument("--tasks", type=int, default=3, help="tasks per user (dashboard rows)")
    ap.add_argument("--runs", type=int, default=3, help="succeeded runs per task")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved floor/subject rounds (A)")
    ap.add_argument("--events", type=int, default=3, help="events per client per paced phase")
    ap.add_argument("--think-ms", type=float, default=5000, help="mean think time, paced (A)")
    ap.add_argument("--bursts", type=int, default=3, help="bursts per burst phase (A)")
    ap.add_argument("--logins", type=int, default=20)
    ap.add_argument("--login-rounds", type=int, default=4)
    ap.add_argument("--probe-clients", type=int, default=10)
    ap.add_argument("--probe-think-ms", type=float, default=50)
    ap.add_argument("--login-probe", choices=["noop", "dashboard"], default="noop")
    ap.add_argument("--window", type=float, default=2.0, help="min no-login window, s (B)")
    ap.add_argument("--bcrypt-rounds", type=int, default=12, help="server BCRYPT_ROUNDS (B)")
    ap.add_argument(
        "--client-nice",
        type=int,
        default=0,
        help="renice this (client) process, e.g. -5, so its own scheduling delays stay out of "
        "the figures (needs root); default 0: left alone",
    )
    ap.add_argument(
        "--only", choices=["", "a", "b", "none"], default="", help="none: only --profile"
    )
    ap.add_argument("--profile", type=int, default=0, help="py-spy seconds per workload")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (db, logs, profiles)")
    ap.add_argument("--verbose", action="store_true", help="print each burst's figures")
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra environment for the server (repeatable)",
    )
    ap.add_argument(
        "--app-root",
        type=Path,
        default=None,
        help="run `make run` in another checkout (e.g. a copy with a fix); default: this one",
    )
    args = ap.parse_args()
    assert 1 <= args.clients <= 500 and args.rounds <= 10 and args.events <= 50
    assert args.logins <= 100 and args.login_rounds <= 20 and args.profile <= 60

    import logging

    logging.disable(logging.INFO)
    global VERBOSE
    VERBOSE = args.verbose
    if args.client_nice:
        os.nice(args.client_nice)
    tmp = Path(tempfile.mkdtemp(prefix="vgen-bench-events-"))
    server = AppServer(
        tmp / "app",
        env={
            "BCRYPT_ROUNDS": str(args.bcrypt_rounds),
            **dict(kv.split("=", 1) for kv in args.server_env),
        },
        **(
            {
                "app_root": args.app_root.resolve(),
                "web_workdir": args.app_root.resolve() / ".web-bench",
            }
            if args.app_root
            else {}
        ),
    )
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU, load avg "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    print(
        f"starting `make run` (reflex run --env prod) in {server.app_root}, "
        f"REFLEX_WEB_WORKDIR={server.web_workdir}"
        + (f", server env {' '.join(args.server_env)}" if args.server_env else "")
        + " ..."
    )
    server.start()
    try:
        print(f"app answered after {server.startup_s:.0f} s at {server.url} (log {server.log})")
        use_app_settings(server)
        asyncio.run(run(server, args, tmp))
    finally:
        server.stop()
        left = server.pids()
        print(f"server stopped; processes left in its group: {left or 'none'}")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
