"""Prometheus metrics with several processes (prometheus-client's multiprocess mode,
services/metrics.py): every process counts into its own files in PROMETHEUS_MULTIPROC_DIR, and one
scrape — whichever process answers it — sums them all.

1. Plain subprocesses, each doing real logins through the service, then a scrape from yet another.
2. The app's backend as production runs it (Granian, 2 workers: tests/scenarios/fault_app_process.py)
   with logins on the login page's socket and Stripe webhooks over HTTP spread over both workers:
   every scrape of GET /metrics, from either worker, shows the totals of both.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import make_user
from tests.scenarios.test_fault_runs import App
from tests.scenarios.test_fault_systems import ORIGIN, Tab, _http
from vgen_app.adapters.payments import TestCheckout
from vgen_app.config import ROOT, reset_settings
from vgen_app.db import session_scope
from vgen_app.services import billing

PW = "correct horse"
TOKEN = "metrics-workers-token-0123456789"
SECRET = "whsec_metrics_workers"

WRITER = """
import os, sys
from vgen_app.db import with_db
from vgen_app.services import accounts, metrics

assert metrics.MULTIPROCESS, "prometheus-client is not in multiprocess mode"
wrong, tag = int(sys.argv[1]), sys.argv[2]
if tag == "w0":
    with_db(accounts.login, "ann@example.com", "correct horse")
for i in range(wrong):
    try:
        with_db(accounts.login, f"nobody-{tag}-{i}@example.com", "wrong password")
    except accounts.AccountError as exc:
        assert exc.code == "bad_credentials", exc.code
print(os.getpid())
"""
SCRAPER = """
import sys
from vgen_app.db import with_db
from vgen_app.services import metrics

assert metrics.MULTIPROCESS
sys.stdout.write(with_db(metrics.scrape).decode())
"""


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _per_process(folder: Path, sample: str, **labels: str) -> dict[int, float]:
    """Each process's own value of one counter sample, read from its file in the folder."""
    found: dict[int, float] = {}
    for path in folder.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            _metric, name, key_labels, _help = json.loads(key)
            if name == sample and key_labels == labels:
                found[pid] = found.get(pid, 0.0) + value
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_separate_processes_are_summed_by_one_scrape(database_url: str, tmp_path: Path) -> None:
    with session_scope() as db:
        make_user(db, "ann@example.com", PW)
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    env["DATABASE_URL"] = database_url
    wrong = {"w0": 2, "w1": 3, "w2": 4}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(n), tag],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag, n in wrong.items()
    ]
    pids = []
    for proc in writers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        pids.append(int(out.split()[-1]))
    scrape = subprocess.run(
        [sys.executable, "-c", SCRAPER],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert scrape.returncode == 0, scrape.stderr
    got = _samples(scrape.stdout)
    assert _value(got, "vgen_logins_total", outcome="refused") == sum(wrong.values())
    assert _value(got, "vgen_logins_total", outcome="ok") == 1
    # Each writer kept its own file, with its own part of the sum.
    per = _per_process(folder, "vgen_logins_total", outcome="refused")
    assert {pid: per.get(pid) for pid in pids} == dict(zip(pids, wrong.values(), strict=True))
    assert _value(got, "vgen_metrics_database_up") == 1  # and the gauges, read once


def _scrape(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics",
        headers={"Authorization": f"Bearer {TOKEN}", "Connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
        return _samples(resp.read().decode())


CHECKOUTS = 6
MAX_UNSIGNED = 200  # unsigned deliveries sent, at most, until both workers have counted some


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_app_workers_one_scrape_shows_both(
    database_url: str,
    tmp_path: Path,
    local_storage: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    reset_settings()
    folder = tmp_path / "metrics"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "REFLEX_REDIS_URL", "GENERATION_API_URL", "ADMIN_TOKENS")
    }
    env.update(
        DATABASE_URL=database_url,
        APP_URL=ORIGIN,
        STORAGE_URL=os.environ["STORAGE_URL"],
        UPLOAD_TMP_DIR=os.environ["UPLOAD_TMP_DIR"],
        GENERATION_SIM_DIR=str(tmp_path / "sim"),
        STRIPE_WEBHOOK_SECRET=SECRET,
        ADMIN_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=str(folder),
        METRICS_CACHE_SECONDS="0",
        REFLEX_STATE_MANAGER_MODE="memory",
        __REFLEX_SKIP_COMPILE="true",
        PYTHONPATH=str(ROOT),
    )
    email = "ann@example.com"
    with session_scope() as db:
        uid = make_user(db, email, PW)
    checkout = TestCheckout(ORIGIN, SECRET)
    pkg = billing.package("10k")
    events = []
    for _ in range(CHECKOUTS):
        with session_scope() as db:
            row = billing.start_checkout(db, uid, pkg.id, checkout)
        events.append(checkout.completed_event(row.id, uid, pkg, email))

    app = App(env, tmp_path / "app", tmp_path / "app.log", workers=2)
    try:
        app.wait_until_working()
        base = f"http://127.0.0.1:{app.port}"
        assert _http("GET", f"{base}/metrics") == 401

        def deliver(event: tuple[str, str]) -> int:
            payload, header = event
            headers = {"Stripe-Signature": header, "Content-Type": "application/json"}
            return _http("POST", f"{base}/api/webhooks/stripe", payload.encode(), headers)

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(deliver, events)) == [200] * CHECKOUTS  # credited
            assert list(pool.map(deliver, events)) == [200] * CHECKOUTS  # duplicates
        # Unsigned deliveries (refused) on fresh connections, until both workers counted some.
        unsigned = 0
        sample = {"type": "unknown", "outcome": "refused"}
        while unsigned < MAX_UNSIGNED:
            with ThreadPoolExecutor(4) as pool:
                codes = list(
                    pool.map(
                        lambda _: _http("POST", f"{base}/api/webhooks/stripe", b"{}"), range(8)
                    )
                )
            assert codes == [400] * 8
            unsigned += 8
            if len(_per_process(folder, "vgen_webhooks_total", **sample)) >= 2:
                break
        per_worker = _per_process(folder, "vgen_webhooks_total", **sample)
        assert len(per_worker) == 2 and set(per_worker) <= app.pids(), per_worker

        async def logins() -> list[tuple[str, str]]:
            tab = Tab(app.port)
            await tab.open()
            try:
                return [
                    await tab.login(email, "wrong password"),
                    await tab.login(email, "another wrong one"),
                    await tab.login(email, PW),
                ]
            finally:
                await tab.close()

        answers = asyncio.run(logins())
        assert [kind for kind, _ in answers] == ["error", "error", "ticket"], answers

        # Every scrape, whichever worker answers it, shows what both counted.
        for _ in range(6):
            got = _scrape(app.port)
            completed = "checkout.session.completed"
            assert _value(got, "vgen_webhooks_total", type=completed, outcome="credited") == 6
            assert _value(got, "vgen_webhooks_total", type=completed, outcome="duplicate") == 6
            assert _value(got, "vgen_webhooks_total", **sample) == unsigned
            assert _value(got, "vgen_logins_total", outcome="refused") == 2
            assert _value(got, "vgen_logins_total", outcome="ok") == 1
            # The login events went through the UI event middleware into the histogram.
            hist = "vgen_event_handler_duration_seconds_count"
            assert _value(got, hist, handler="login_state.submit") == 3
            assert _value(got, "vgen_runs", status="queued") == 0
            assert _value(got, "vgen_metrics_database_up") == 1
    finally:
        app.kill9()


LAUNCHER = """
import os, sys
import rxconfig  # what `reflex run` loads first
from vgen_app.services import metrics

print(os.environ.get("PROMETHEUS_MULTIPROC_DIR"), metrics.MULTIPROCESS, os.getpid())
"""
LATE = """
import os
import prometheus_client
from vgen_app import metrics_dir

print(metrics_dir.prepare(), os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
"""


def test_the_launcher_makes_its_own_folder_before_the_app_counts(tmp_path: Path) -> None:
    """rxconfig.py (loaded first by `reflex run`, the process that starts the workers) makes this
    launch's folder and puts it in the environment before prometheus-client is imported; the
    folders of launchers that are gone are removed, a running one's are kept."""
    base = tmp_path / "metrics"
    gone = base / "999999999"  # no such process
    alive = base / str(os.getpid())
    for folder in (gone, alive):
        folder.mkdir(parents=True)
        (folder / "counter_1.db").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(METRICS_DIR=str(base), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    folder, multiprocess, pid = done.stdout.split()[-3:]
    assert folder == str(base / pid) and multiprocess == "True"
    assert not gone.exists() and (alive / "counter_1.db").exists()
    assert any(Path(folder).glob("counter_*.db"))  # the launcher's own (zero) counters

    late = subprocess.run(
        [sys.executable, "-c", LATE],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert late.returncode == 0, late.stderr
    assert late.stdout.split() == ["None", "None"]  # too late to switch: counts on its own
