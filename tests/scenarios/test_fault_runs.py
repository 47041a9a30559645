"""Runs under faults: a stampede of run attempts against a balance that covers a fifth of them, and
kill -9 of the app with runs in flight, then a restart. Each scenario records its figure."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlmodel import col, select

from tests.helpers import ingest, make_user
from vgen_app.adapters import media
from vgen_app.adapters import simulator as simulator_mod
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import get_storage
from vgen_app.config import ROOT, reset_settings
from vgen_app.db import run_db, session_scope, with_db
from vgen_app.models import AnalyticsOutbox, Lease, LedgerEntry, Run, TaskInput
from vgen_app.services import ledger, run_worker, runs, tasks
from vgen_app.worker import GENERATION_LEASE

PRICE = 500  # lipsync with the 3 s voice track of `samples`: the model's minimum price


pytestmark = pytest.mark.usefixtures("local_storage")


def ready_tasks(owner: str, count: int, samples: dict[str, Path]) -> list[str]:
    """`count` lipsync tasks with both inputs in place. The first is filled by the upload path
    itself (probe, checks, storage, record); the others get their own stored copies of the same
    files, recorded by the same service call, without probing identical files again."""
    with session_scope() as db:
        ids = [tasks.create_task(db, owner, "lipsync", f"t{i}").id for i in range(count)]
    first = {slot: ingest(owner, ids[0], slot, samples[slot]) for slot in ("video", "audio")}
    storage = get_storage()
    probed = {slot: media.probe(samples[slot]) for slot in first}

    def fill(task_id: str) -> None:
        for slot, done in first.items():
            key = tasks.storage_key(task_id, slot, done.filename)
            storage.put_file(key, samples[slot])
            with_db(
                tasks.attach_input,
                owner,
                task_id,
                slot,
                key,
                done.filename,
                done.size_bytes,
                probed[slot],
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(fill, ids[1:]))
    with session_scope() as db:
        assert len(db.exec(select(TaskInput.id)).all()) == 2 * count
    return ids


# --- 1. 500 concurrent run attempts, a balance that covers 100 -------------------------------------

ATTEMPTS = 500
AFFORDABLE = 100
THREADS = 50


def test_500_concurrent_run_attempts_with_balance_for_100(
    database_url: str, samples, figure
) -> None:
    """Through the entry point the task page's Run button uses (`run_db(runs.start_run, …)`, here
    on a pool of 50 worker threads), 500 distinct ready tasks at once: exactly 100 debits and 400
    refusals that debit nothing and are logged as attempts."""
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, AFFORDABLE * PRICE, "topup")
    task_ids = ready_tasks(uid, ATTEMPTS, samples)

    async def stampede() -> tuple[list[object], float]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=THREADS))
        gate = asyncio.Event()

        async def attempt(task_id: str) -> object:
            await gate.wait()
            try:
                return await run_db(runs.start_run, uid, task_id)
            except runs.InsufficientTokens as exc:
                return exc
            except Exception as exc:  # noqa: BLE001 - any other outcome is a failure, shown below
                return exc

        pending = [asyncio.ensure_future(attempt(t)) for t in task_ids]
        await asyncio.sleep(0)
        started = time.perf_counter()
        gate.set()
        outcomes = await asyncio.gather(*pending)
        return outcomes, time.perf_counter() - started

    outcomes, wall_s = asyncio.run(stampede())
    ran = [o for o in outcomes if isinstance(o, Run)]
    refused = [o for o in outcomes if isinstance(o, runs.InsufficientTokens)]
    other = [o for o in outcomes if not isinstance(o, Run | runs.InsufficientTokens)]
    assert other == [], other[:3]
    assert (len(ran), len(refused)) == (AFFORDABLE, ATTEMPTS - AFFORDABLE)
    assert {e.code for e in refused} == {"insufficient_tokens"}
    assert all(e.price == PRICE and 0 <= e.balance < PRICE for e in refused)

    with session_scope() as db:
        balance = ledger.balance_of(db, uid)
        assert balance == 0  # >= 0, and every affordable run was taken
        assert ledger.ledger_sum(db, uid) == balance
        all_runs = db.exec(select(Run)).all()
        assert sorted(r.id for r in all_runs) == sorted(r.id for r in ran)
        assert len({r.task_id for r in all_runs}) == AFFORDABLE
        assert all((r.status, r.attempt, r.price) == ("queued", 1, PRICE) for r in all_runs)
        used = db.exec(select(LedgerEntry).where(LedgerEntry.action == "used")).all()
        applied = [e for e in used if e.outcome == "applied"]
        rejected = [e for e in used if e.outcome == "rejected"]
        # One debit per run that exists, each from a distinct balance: no two spent the same tokens.
        assert sorted(e.reference for e in applied) == sorted(r.id for r in all_runs)
        assert sorted(e.old_balance for e in applied) == list(
            range(PRICE, (AFFORDABLE + 1) * PRICE, PRICE)
        )
        # A refused attempt changes nothing and is recorded as such (SPEC: "the attempt is logged"),
        # with a reference no run carries.
        assert len(rejected) == ATTEMPTS - AFFORDABLE
        assert all(e.diff == -PRICE and e.old_balance == e.new_balance for e in rejected)
        assert not {e.reference for e in rejected} & {r.id for r in all_runs}
        attempts_logged = [
            r.row
            for r in db.exec(select(AnalyticsOutbox))
            if r.table_name == "balance_changes" and r.row["action"] == "used"
        ]
        assert Counter(r["outcome"] for r in attempts_logged) == {
            "applied": AFFORDABLE,
            "rejected": ATTEMPTS - AFFORDABLE,
        }
    backend = database_url.split(":", 1)[0].split("+")[0]
    figure(
        f"{backend}: {ATTEMPTS} concurrent run attempts ({THREADS} threads through run_db) on a"
        f" balance for {AFFORDABLE}: {len(ran)} debited, {len(refused)} refused"
        f" (insufficient_tokens, logged as rejected), 0 other errors; balance {balance}, ledger sum"
        f" = balance, 0 tokens overspent; wall {wall_s:.2f} s"
        f" ({ATTEMPTS / wall_s:.0f} attempts/s)"
    )


# --- regression: a simulator job whose process died is resumed, not lost ------------------------------
# Found by scenario 2: the simulator's jobs live on disk, but their work lived only in the thread pool
# of the process that accepted them. Killed, it left them `queued`/`processing` for ever; the runs
# then hung until RUN_TIMEOUT_SECONDS (15 min) and failed: the user's result was lost.

KILLED_WORKER = """
import sys, time
from pathlib import Path
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import get_storage
from vgen_app.db import with_db
from vgen_app.services import run_worker

report = with_db(run_worker.step, Simulator(Path(sys.argv[1]), delay_s=0), get_storage())
print(report.submitted, flush=True)
time.sleep(120)  # killed -9 from outside, jobs accepted and in the works
"""


def _job_records(sim_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (sim_dir / "jobs").glob("*.json")]


def test_runs_whose_worker_was_killed_mid_job_still_succeed(
    database_url: str, samples, tmp_path: Path
) -> None:
    sim_dir = tmp_path / "sim"
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 10_000, "topup")
    run_ids = _start_runs(uid, ready_tasks(uid, 4, samples))
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(sim_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout.readline().strip() == "4"  # all four accepted by the simulator
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    before = {j["id"]: j for j in _job_records(sim_dir)}
    orphans = {i for i, j in before.items() if j["status"] in ("queued", "processing")}
    assert orphans, "the worker finished before it was killed: nothing was tested"

    sim = Simulator(sim_dir, delay_s=0)
    storage = get_storage()
    deadline = time.monotonic() + 60
    with session_scope() as db:
        while _statuses()["succeeded"] < 4 and time.monotonic() < deadline:
            run_worker.step(db, sim, storage)
            time.sleep(0.1)
        assert _statuses() == {"succeeded": 4}
        assert ledger.balance_of(db, uid) == 10_000 - 4 * PRICE  # no refund: nothing failed
        assert ledger.ledger_sum(db, uid) == ledger.balance_of(db, uid)
        results = [r.result_key for r in db.exec(select(Run))]
    jobs = _job_records(sim_dir)
    assert Counter(j["params"]["client_ref"] for j in jobs) == Counter(run_ids)  # none twice
    for job in jobs:  # each orphan was worked once more (resumed), the others not again
        runs_before = before[job["id"]].get("runs") or 0
        assert job["runs"] == runs_before + (job["id"] in orphans), (job, before[job["id"]])
    for n, key in enumerate(results):
        out = tmp_path / f"result{n}.mp4"
        storage.download_to(key, out)
        assert media.probe(out).kind == "video"


class _DeadPool:
    """A pool whose process dies right after accepting the work: the job's lock is released
    (the kernel does that for a dead process) and the work never runs."""

    def submit(self, fn, job_id: str, lock: int | None = None) -> None:
        if lock is not None and lock >= 0:
            os.close(lock)


def _lipsync_inputs(samples) -> dict[str, str]:
    return {"video": samples["video"].as_uri(), "audio": samples["audio"].as_uri()}


def test_an_orphaned_job_is_resumed_once_however_many_poll_it(
    samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0)
    monkeypatch.setattr(simulator_mod, "_pool", _DeadPool)
    job_id = sim.submit("lipsync", _lipsync_inputs(samples), {"client_ref": "run-1"})
    monkeypatch.undo()
    # Eight pollers (other workers, other processes' simulators) find the orphan at once.
    barrier = threading.Barrier(8)

    def poll() -> str:
        barrier.wait()
        return Simulator(tmp_path / "sim", delay_s=0).get(job_id).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: poll(), range(8))) <= {"queued", "processing", "succeeded"}
    deadline = time.monotonic() + 30
    while (job := sim.get(job_id)).status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.status == "succeeded"
    (record,) = _job_records(tmp_path / "sim")
    assert record["runs"] == 1  # worked once: by exactly one of the pollers
    # A resubmit of the same client_ref (a submitter that died before recording the id) gets it.
    assert sim.submit("lipsync", _lipsync_inputs(samples), {"client_ref": "run-1"}) == job_id


def test_a_job_whose_worker_is_alive_is_not_taken_over(samples, tmp_path: Path) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0.5)
    job_id = sim.submit("lipsync", _lipsync_inputs(samples))
    other = Simulator(tmp_path / "sim", delay_s=0.5)
    deadline = time.monotonic() + 30
    while other.get(job_id).status != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.01)
    (record,) = _job_records(tmp_path / "sim")
    assert (record["status"], record["runs"]) == ("succeeded", 1)


# --- 2. kill -9 of the app with 50 runs in flight, then a restart ----------------------------------

IN_FLIGHT_RUNS = 50
LATE_RUNS = 10  # started just before the kill: queued, or caught between submit and its record
SIM_DELAY_S = 2.0
SIM_FAILURE_RATE = 0.1
SIMULATED_FAILURE = "simulated failure"
LEASE_S = 2.0
START_TIMEOUT_S = 90
FINISH_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


class App:
    """The app's backend in its own process group (tests/scenarios/fault_app_process.py)."""

    def __init__(self, env: dict[str, str], workdir: Path, log: Path, workers: int) -> None:
        self.port = _free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tests" / "scenarios" / "fault_app_process.py"),
                    str(self.port),
                    str(workers),
                ],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_working(self, timeout: float = START_TIMEOUT_S) -> float:
        """Until /api/health answers and one of this app's processes holds the generation lease."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the app exited:\n{self.tail()}"
            if _healthy(self.port) and self.holds_lease():
                return time.monotonic() - started
            time.sleep(0.2)
        raise AssertionError(f"the app did not start working in {timeout} s:\n{self.tail()}")

    def pids(self) -> set[int]:
        out = subprocess.run(
            ["ps", "-o", "pid=", "-g", str(self.proc.pid)],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        return {int(p) for p in out.split()}

    def holds_lease(self) -> bool:
        with session_scope() as db:
            lease = db.get(Lease, GENERATION_LEASE)
            holder = lease.holder if lease else None
        return holder is not None and int(holder.split(":")[1]) in self.pids()

    def kill9(self) -> None:
        """SIGKILL the whole group: supervisor, workers, ffmpeg — nothing gets to clean up."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _statuses() -> Counter:
    with session_scope() as db:
        return Counter(db.exec(select(Run.status)).all())


def _submitted(run_ids: list[str]) -> bool:
    with session_scope() as db:
        return (
            db.exec(
                select(Run.id).where(
                    col(Run.id).in_(run_ids), col(Run.provider_job_id).is_not(None)
                )
            ).first()
            is not None
        )


def _wait_for(predicate, timeout: float, what: str, app: App | None = None) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            extra = f"\n{app.tail()}" if app else ""
            raise AssertionError(f"{what}: not within {timeout} s; runs {dict(_statuses())}{extra}")
        time.sleep(0.1)
    return time.monotonic() - started


def _start_runs(uid: str, task_ids: list[str]) -> list[str]:
    def start(task_id: str) -> str:
        with session_scope() as db:
            return runs.start_run(db, uid, task_id).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(start, task_ids))


def test_kill_9_of_the_app_with_50_runs_in_flight_then_restart(
    database_url: str,
    samples,
    tmp_path: Path,
    local_storage: Path,
    monkeypatch: pytest.MonkeyPatch,
    figure,
) -> None:
    """The app's backend (Granian, 2 workers, the generation worker in its lifespan, the
    simulator) owns 50 runs in every state; kill -9 its process group, start a fresh one."""
    sim_dir = tmp_path / "sim"
    monkeypatch.setenv("GENERATION_SIM_DIR", str(sim_dir))
    reset_settings()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "REFLEX_REDIS_URL", "GENERATION_API_URL", "ADMIN_TOKEN")
    }
    env.update(
        DATABASE_URL=database_url,
        STORAGE_URL=os.environ["STORAGE_URL"],
        UPLOAD_TMP_DIR=os.environ["UPLOAD_TMP_DIR"],
        GENERATION_SIM_DIR=str(sim_dir),
        GENERATION_SIM_DELAY_SECONDS=str(SIM_DELAY_S),
        GENERATION_SIM_FAILURE_RATE=str(SIM_FAILURE_RATE),
        WORKER_LEASE_SECONDS=str(LEASE_S),
        WORKER_POLL_SECONDS="0.2",
        # Far beyond the test: a run that only ends by timing out is a lost result, not a pass.
        RUN_TIMEOUT_SECONDS="900",
        REFLEX_STATE_MANAGER_MODE="memory",
        __REFLEX_SKIP_COMPILE="true",
        PYTHONPATH=str(ROOT),
    )
    balance0 = 100_000
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, balance0, "topup")
    task_ids = ready_tasks(uid, IN_FLIGHT_RUNS, samples)
    early, late = task_ids[:-LATE_RUNS], task_ids[-LATE_RUNS:]

    first = App(env, tmp_path / "app1", tmp_path / "app1.log", workers=2)
    try:
        first.wait_until_working()
        runs_started = time.monotonic()
        run_ids = _start_runs(uid, early)
        # Let the first results land, then start the rest and pull the plug at once.
        _wait_for(lambda: _statuses()["succeeded"] >= 3, 60, "first results", first)
        late_ids = _start_runs(uid, late)
        run_ids += late_ids
        # Pull the plug once the worker has handed at least one late run to the simulator: its
        # job (SIM_DELAY_S long) is then surely unfinished, whatever the early ones' timing.
        _wait_for(lambda: _submitted(late_ids), 30, "a late run submitted", first)
        at_kill = _statuses()
        first.kill9()
        kill_s = time.monotonic() - runs_started
    finally:
        first.kill9()
    killed_at = dict(at_kill)
    # The simulator's jobs the kill left unfinished: their work died with the app.
    orphaned = {
        j["id"]: j.get("runs", 0)
        for j in _job_records(sim_dir)
        if j["status"] in ("queued", "processing")
    }
    assert orphaned, "every job had finished before the kill: the restart tested nothing"

    second = App(env, tmp_path / "app2", tmp_path / "app2.log", workers=2)
    try:
        restarted = time.monotonic()
        startup_s = second.wait_until_working()
        _wait_for(
            lambda: sum(_statuses()[s] for s in ("succeeded", "failed")) == IN_FLIGHT_RUNS,
            FINISH_TIMEOUT_S,
            "every run final after the restart",
            second,
        )
        recovery_s = time.monotonic() - restarted
    finally:
        second.kill9()

    storage = get_storage()
    with session_scope() as db:
        all_runs = db.exec(select(Run)).all()
        assert sorted(r.id for r in all_runs) == sorted(run_ids)
        succeeded = [r for r in all_runs if r.status == "succeeded"]
        failed = [r for r in all_runs if r.status == "failed"]
        assert len(succeeded) + len(failed) == IN_FLIGHT_RUNS
        # No run was lost to the kill: a failure is the simulator's own (the failure rate), never a
        # timeout, a vanished job or an unavailable service.
        assert all(SIMULATED_FAILURE in (r.error or "") for r in failed), [r.error for r in failed]
        entries = db.exec(select(LedgerEntry).where(LedgerEntry.outcome == "applied")).all()
        debits = Counter(e.reference for e in entries if e.action == "used")
        refunds = Counter(e.reference for e in entries if e.action == "refund")
        assert debits == Counter(run_ids)  # each run debited exactly once
        assert refunds == Counter(r.id for r in failed)  # each failure refunded exactly once
        assert all(r.refunded_at for r in failed) and not any(r.refunded_at for r in succeeded)
        balance = ledger.balance_of(db, uid)
        assert balance == balance0 - PRICE * len(succeeded)
        assert ledger.ledger_sum(db, uid) == balance
        # Submitted once: one launch record per run, one simulator job per run (its client_ref).
        launches = Counter(
            r.row["properties"]["run_id"]
            for r in db.exec(select(AnalyticsOutbox))
            if r.table_name == "generation_log"
        )
        assert launches == Counter(run_ids)
        job_ids = {r.provider_job_id for r in all_runs}
        results = [r.result_key for r in succeeded]
    jobs = _job_records(sim_dir)
    assert Counter(j["params"]["client_ref"] for j in jobs) == Counter(run_ids)
    assert {j["id"] for j in jobs} == job_ids
    assert {j["id"] for j in jobs if j["status"] in ("queued", "processing")} == set()
    resumed = {j["id"] for j in jobs if j["id"] in orphaned and j["runs"] > orphaned[j["id"]]}
    assert resumed == set(orphaned)  # every orphan was taken over by the restarted app
    stored = {str(p.relative_to(local_storage)) for p in (local_storage / "results").rglob("*.mp4")}
    assert set(results) <= stored
    # Every result is kept in our storage and plays.
    for key in results:
        assert key and storage.exists(key)
        out = tmp_path / "check.mp4"
        storage.download_to(key, out)
        info = media.probe(out)
        assert info.kind == "video" and info.audio_codec == "aac"
        assert abs((info.duration_s or 0) - 3.0) < 0.3
    backend = database_url.split(":", 1)[0].split("+")[0]
    figure(
        f"{backend}: {IN_FLIGHT_RUNS} runs, app (2 Granian workers) killed -9 with"
        f" {killed_at.get('queued', 0)} queued / {killed_at.get('processing', 0)} processing /"
        f" {killed_at.get('succeeded', 0) + killed_at.get('failed', 0)} final runs"
        f" ({len(orphaned)} simulator jobs left unfinished) {kill_s:.1f} s after the first"
        f" start; after restart:"
        f" {len(succeeded)} finished ok, {len(failed)} failed (simulated, {SIM_FAILURE_RATE:.0%}"
        f" rate) + refunded once; {len(resumed)} orphaned jobs resumed, 0 lost results,"
        f" {len(stored) - len(results)} stray result copies, 0 double debits/refunds/submits;"
        f" recovery"
        f" {recovery_s:.1f} s from restart to all final (app start {startup_s:.1f} s, lease"
        f" {LEASE_S:.0f} s)"
    )
