"""Runs against the simulator with real ffmpeg: debit, submit, poll, keep the result, refund once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from tests.fakes.media_samples import make_audio, make_video
from tests.helpers import ingest, make_user
from vgen_app.adapters import generation as gen
from vgen_app.adapters import media
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import LocalStorage
from vgen_app.db import session_scope
from vgen_app.models import AnalyticsOutbox, LedgerEntry, Run
from vgen_app.services import ledger, run_worker, runs, tasks
from vgen_app.services.tasks import NotFound, TaskError

pytestmark = pytest.mark.usefixtures("local_storage")


@pytest.fixture
def storage(local_storage: Path) -> LocalStorage:
    return LocalStorage(local_storage)


@pytest.fixture
def sim(tmp_path: Path) -> Simulator:
    return Simulator(tmp_path / "sim", delay_s=0.3, failure_rate=0.0, expiry_s=600)


def lipsync_task(db: Session, owner: str, samples) -> str:
    task = tasks.create_task(db, owner, "lipsync", "promo")
    ingest(owner, task.id, "video", samples["video"])
    ingest(owner, task.id, "audio", samples["audio"])
    return task.id


def drive(db: Session, provider, storage, run_id: str, timeout: float = 60) -> Run:
    """Run worker rounds until the run is final."""
    deadline = time.monotonic() + timeout
    while True:
        run_worker.step(db, provider, storage)
        db.expire_all()
        run = db.get(Run, run_id)
        db.commit()
        if run.status in ("succeeded", "failed") or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_whole_lifecycle_produces_a_playable_result(
    db: Session,
    samples,
    sim,
    storage,
    tmp_path: Path,
) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 10_000, "topup")
    task_id = lipsync_task(db, ann, samples)
    run = runs.start_run(db, ann, task_id)
    assert (run.attempt, run.status, run.price) == (1, "queued", 500)  # 3 s audio → min price
    assert ledger.balance_of(db, ann) == 9_500
    debit = db.exec(select(LedgerEntry).where(LedgerEntry.action == "used")).one()
    assert (debit.reference, debit.diff) == (run.id, -500)

    done = drive(db, sim, storage, run.id)
    assert done.status == "succeeded" and done.progress == 1.0 and done.provider == "simulator"
    assert done.result_key and storage.exists(done.result_key)
    out = tmp_path / "out.mp4"
    storage.download_to(done.result_key, out)
    info = media.probe(out)
    assert info.kind == "video" and abs(info.duration_s - 3.0) < 0.3  # cut to the audio
    assert info.audio_codec == "aac"
    # A generation_log row for the launch, with the provider's job id and the inputs.
    logs = [r.row for r in db.exec(select(AnalyticsOutbox)) if r.table_name == "generation_log"]
    assert len(logs) == 1
    props = logs[0]["properties"]
    assert logs[0]["taskid"] == task_id and logs[0]["email"] == "ann@example.com"
    assert (props["run_id"], props["attempt"], props["model"], props["price"]) == (
        run.id,
        1,
        "lipsync",
        500,
    )
    assert props["provider_job_id"] == done.provider_job_id
    assert props["inputs"]["audio"]["duration_s"] == pytest.approx(3.0, abs=0.2)
    assert ledger.balance_of(db, ann) == 9_500  # success: no refund


def test_regenerate_makes_attempt_2_from_stored_inputs_and_charges_again(
    db: Session,
    samples,
    sim,
    storage,
) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 10_000, "topup")
    task_id = lipsync_task(db, ann, samples)
    first = drive(db, sim, storage, runs.start_run(db, ann, task_id).id)
    second_run = runs.start_run(db, ann, task_id)
    assert second_run.attempt == 2 and second_run.inputs == first.inputs
    second = drive(db, sim, storage, second_run.id)
    assert second.status == "succeeded" and second.result_key != first.result_key
    assert storage.exists(first.result_key)  # earlier results stay
    assert ledger.balance_of(db, ann) == 9_000
    assert [r.attempt for r in tasks.task_view(db, ann, task_id).runs] == [2, 1]


def test_failed_job_is_refunded_exactly_once(db: Session, samples, storage, tmp_path) -> None:
    failing = Simulator(tmp_path / "simf", delay_s=0.1, failure_rate=1.0)
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    task_id = lipsync_task(db, ann, samples)
    run = runs.start_run(db, ann, task_id)
    done = drive(db, failing, storage, run.id)
    assert done.status == "failed" and done.error and done.refunded_at
    assert ledger.balance_of(db, ann) == 1_000
    # Failing it again (another worker, a retry) refunds nothing more.
    assert runs.fail_run(db, run.id, "again") is False
    refunds = db.exec(select(LedgerEntry).where(LedgerEntry.action == "refund")).all()
    assert [(r.diff, r.reference) for r in refunds] == [(500, run.id)]
    assert ledger.ledger_sum(db, ann) == ledger.balance_of(db, ann)


def test_concurrent_failures_refund_once(database_url: str, samples, tmp_path) -> None:
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        ledger.change_balance(db, ann, 1_000, "topup")
        task_id = lipsync_task(db, ann, samples)
        run_id = runs.start_run(db, ann, task_id).id
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def fail() -> None:
        barrier.wait()
        with session_scope() as s:
            outcomes.append(runs.fail_run(s, run_id, "boom"))

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [False] * 7 + [True]
    with session_scope() as db:
        assert ledger.balance_of(db, ann) == 1_000


class ForgetfulProvider:
    """Accepts jobs, then forgets them (as the real service does after expiry)."""

    name = "forgetful"

    def submit(self, model, inputs, params=None):
        return "job-1"

    def get(self, job_id):
        raise gen.JobNotFound(job_id)

    def fetch_result(self, job, dest):
        raise gen.JobNotFound(job.id)


class DownProvider:
    name = "down"

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, model, inputs, params=None):
        self.calls += 1
        raise gen.GenerationError("503")

    def get(self, job_id):
        raise gen.GenerationError("503")

    def fetch_result(self, job, dest):
        raise gen.GenerationError("503")


def test_vanished_job_fails_and_refunds(db: Session, samples, storage) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    run = runs.start_run(db, ann, lipsync_task(db, ann, samples))
    done = drive(db, ForgetfulProvider(), storage, run.id)
    assert done.status == "failed" and "expired or vanished" in done.error
    assert ledger.balance_of(db, ann) == 1_000


def test_unavailable_service_fails_after_retries_and_refunds(db: Session, samples, storage) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    run = runs.start_run(db, ann, lipsync_task(db, ann, samples))
    provider = DownProvider()
    done = drive(db, provider, storage, run.id)
    assert done.status == "failed" and provider.calls == run_worker.MAX_SUBMIT_ATTEMPTS
    assert ledger.balance_of(db, ann) == 1_000


def test_run_that_never_finishes_times_out(
    db: Session,
    samples,
    storage,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import timedelta

    from vgen_app import clock

    slow = Simulator(tmp_path / "slow", delay_s=3600)
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    run = runs.start_run(db, ann, lipsync_task(db, ann, samples))
    run_worker.step(db, slow, storage)
    assert db.get(Run, run.id).status == "processing"
    clock.travel(timedelta(hours=1))
    run_worker.step(db, slow, storage)
    db.expire_all()
    done = db.get(Run, run.id)
    assert done.status == "failed" and "timed out" in done.error
    assert ledger.balance_of(db, ann) == 1_000


def test_not_enough_tokens_debits_nothing_and_records_the_attempt(db: Session, samples) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 499, "topup")
    task_id = lipsync_task(db, ann, samples)
    with pytest.raises(runs.InsufficientTokens) as err:
        runs.start_run(db, ann, task_id)
    assert "costs 500 tokens" in err.value.message and "499" in err.value.message
    assert ledger.balance_of(db, ann) == 499
    assert db.exec(select(Run)).all() == []
    refused = db.exec(select(LedgerEntry).where(LedgerEntry.outcome == "rejected")).one()
    assert (refused.action, refused.diff) == ("used", -500)


def test_two_concurrent_runs_with_balance_for_one(database_url: str, samples) -> None:
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        ledger.change_balance(db, ann, 500, "topup")
        task_ids = [lipsync_task(db, ann, samples), lipsync_task(db, ann, samples)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def start(task_id: str) -> None:
        barrier.wait()
        with session_scope() as s:
            try:
                runs.start_run(s, ann, task_id)
                outcomes.append("ran")
            except runs.InsufficientTokens:
                outcomes.append("refused")

    threads = [threading.Thread(target=start, args=(t,)) for t in task_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ran", "refused"]
    with session_scope() as db:
        assert ledger.balance_of(db, ann) == 0
        assert len(db.exec(select(Run)).all()) == 1


def test_a_task_runs_once_at_a_time_and_inputs_are_locked_meanwhile(db: Session, samples) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 10_000, "topup")
    task_id = lipsync_task(db, ann, samples)
    runs.start_run(db, ann, task_id)
    with pytest.raises(TaskError) as err:
        runs.start_run(db, ann, task_id)
    assert err.value.code == "busy"
    with pytest.raises(TaskError) as err:
        ingest(ann, task_id, "audio", samples["audio"])
    assert err.value.code == "busy"
    assert ledger.balance_of(db, ann) == 9_500


def test_run_needs_every_input(db: Session, samples) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 10_000, "topup")
    task = tasks.create_task(db, ann, "lipsync")
    ingest(ann, task.id, "video", samples["video"])
    with pytest.raises(TaskError) as err:
        runs.start_run(db, ann, task.id)
    assert err.value.code == "missing_inputs" and "Voice track" in err.value.message


def test_another_users_task_input_and_result_are_invisible(
    db: Session, samples, sim, storage
) -> None:
    ann = make_user(db, "ann@example.com")
    eve = make_user(db, "eve@example.com")
    ledger.change_balance(db, ann, 10_000, "topup")
    ledger.change_balance(db, eve, 10_000, "topup")
    task_id = lipsync_task(db, ann, samples)
    run = drive(db, sim, storage, runs.start_run(db, ann, task_id).id)
    with pytest.raises(NotFound):
        tasks.get_task(db, eve, task_id)
    with pytest.raises(NotFound):
        runs.start_run(db, eve, task_id)
    with pytest.raises(NotFound):
        runs.result_of(db, eve, run.id)
    with pytest.raises(NotFound):
        tasks.task_view(db, eve, task_id)
    with pytest.raises(NotFound):
        ingest(eve, task_id, "video", samples["video"])
    assert runs.result_of(db, ann, run.id).result_key == run.result_key
    assert ledger.balance_of(db, eve) == 10_000


def test_talking_photo_and_faceswap_produce_video(
    db: Session, sim, storage, tmp_path: Path
) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 10_000, "topup")
    from tests.fakes.media_samples import make_image

    image = make_image(tmp_path / "face.jpg")
    voice = make_audio(tmp_path / "voice.mp3", seconds=2)
    clip = make_video(tmp_path / "clip.mp4", seconds=2)
    photo = tasks.create_task(db, ann, "talking-photo")
    ingest(ann, photo.id, "image", image)
    ingest(ann, photo.id, "audio", voice)
    swap = tasks.create_task(db, ann, "faceswap")
    ingest(ann, swap.id, "video", clip)
    ingest(ann, swap.id, "image", image)
    for task_id in (photo.id, swap.id):
        done = drive(db, sim, storage, runs.start_run(db, ann, task_id).id)
        assert done.status == "succeeded", done.error
        out = tmp_path / f"{task_id}.mp4"
        storage.download_to(done.result_key, out)
        info = media.probe(out)
        assert info.kind == "video" and abs(info.duration_s - 2.0) < 0.3


def test_forked_workers_have_distinct_lease_identities() -> None:
    """Granian forks app workers from a supervisor that imported the app: identities must differ."""
    import multiprocessing

    from vgen_app import worker

    parent = worker.holder()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_holder_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    found = [queue.get(timeout=30) for _ in children]
    for child in children:
        child.join(timeout=30)
    assert len({parent, *found}) == 3


def _holder_in_child(queue) -> None:
    from vgen_app import worker

    queue.put(worker.holder())
