"""Kill -9 the worker that holds the generation lease: another takes over within seconds, every run
reaches a final state, none is submitted twice, and debits = successes + refunds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from tests.helpers import ingest, make_user
from vgen_app.config import ROOT, reset_settings
from vgen_app.db import session_scope
from vgen_app.models import AnalyticsOutbox, Lease, LedgerEntry, Run
from vgen_app.services import ledger, runs, tasks
from vgen_app.worker import GENERATION_LEASE

pytestmark = pytest.mark.postgres
LEASE_S = 2.0
RUNS = 10


def _holder(db) -> str | None:
    db.expire_all()
    lease = db.get(Lease, GENERATION_LEASE)
    db.commit()
    return lease.holder if lease else None


def test_lease_holder_killed_another_takes_over(
    postgres_url: str, samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import _wipe

    _wipe(postgres_url)
    env = {
        **os.environ,
        "DATABASE_URL": postgres_url,
        "STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "UPLOAD_TMP_DIR": str(tmp_path / "spool"),
        "GENERATION_SIM_DIR": str(tmp_path / "sim"),
        "GENERATION_SIM_DELAY_SECONDS": "1.5",
        "WORKER_LEASE_SECONDS": str(LEASE_S),
        "WORKER_POLL_SECONDS": "0.2",
        "RUN_TIMEOUT_SECONDS": "20",
        "PYTHONPATH": str(ROOT),
    }
    for key in ("DATABASE_URL", "STORAGE_URL", "UPLOAD_TMP_DIR", "GENERATION_SIM_DIR"):
        monkeypatch.setenv(key, env[key])
    reset_settings()
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 100_000, "topup")
        run_ids = []
        for i in range(RUNS):
            task = tasks.create_task(db, uid, "lipsync", f"t{i}")
            ingest(uid, task.id, "video", samples["video"])
            ingest(uid, task.id, "audio", samples["audio"])
            run_ids.append(runs.start_run(db, uid, task.id).id)

    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "scenarios" / "worker_process.py")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        with session_scope() as db:
            deadline = time.monotonic() + 30
            while (holder := _holder(db)) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert holder, "no worker took the lease"
            # Let it get going, then kill it mid-flight.
            while time.monotonic() < deadline:
                db.expire_all()
                started = db.exec(select(Run).where(Run.status != "queued")).all()
                db.commit()
                if len(started) >= 2:
                    break
                time.sleep(0.05)
            victim = int(holder.split(":")[1])
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            while (new := _holder(db)) == holder and time.monotonic() - killed_at < 30:
                time.sleep(0.05)
            takeover_s = time.monotonic() - killed_at
            assert new != holder and int(new.split(":")[1]) != victim
            print(f"\nfailover: lease {LEASE_S:.0f} s, taken over after {takeover_s:.2f} s")
            assert takeover_s < LEASE_S + 3

            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                db.expire_all()
                final = db.exec(select(Run).where(Run.status.in_(["succeeded", "failed"]))).all()
                db.commit()
                if len(final) == RUNS:
                    break
                time.sleep(0.2)
            db.expire_all()
            all_runs = db.exec(select(Run)).all()
            assert sorted(r.status in ("succeeded", "failed") for r in all_runs) == [True] * RUNS
            launches = [
                r.row["properties"]["run_id"]
                for r in db.exec(select(AnalyticsOutbox))
                if r.table_name == "generation_log"
            ]
            assert sorted(launches) == sorted(run_ids)  # each run submitted exactly once
            succeeded = [r for r in all_runs if r.status == "succeeded"]
            failed = [r for r in all_runs if r.status == "failed"]
            refunds = db.exec(select(LedgerEntry).where(LedgerEntry.action == "refund")).all()
            assert sorted(r.reference for r in refunds) == sorted(r.id for r in failed)
            assert all(r.result_key for r in succeeded)
            price = all_runs[0].price
            assert ledger.balance_of(db, uid) == 100_000 - price * len(succeeded)
            assert ledger.ledger_sum(db, uid) == ledger.balance_of(db, uid)
            print(f"failover: {len(succeeded)} succeeded, {len(failed)} failed and refunded")
    finally:
        for p in procs:
            p.kill()
            p.wait()
