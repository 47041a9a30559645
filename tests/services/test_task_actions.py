"""Issue L's task actions in the services: rename, delete (files really gone from storage, ledger
rows kept), cancel a queued run (refunded exactly once, also against a concurrent submit or a
second cancel), plain failure reasons, the smallest usable picture, and the run-finished e-mail
(once per run, never when turned off)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from tests.fakes.media_samples import make_image, make_video
from tests.helpers import ingest, make_user
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import LocalStorage
from vgen_app.db import session_scope
from vgen_app.models import LedgerEntry, Run, RunStatus, Task, TaskInput, User
from vgen_app.services import ledger, run_mails, run_worker, runs, tasks, uploads
from vgen_app.services.errors import NotFound, TaskError

pytestmark = pytest.mark.usefixtures("local_storage")


def _task(db: Session, owner: str, samples) -> str:
    task = tasks.create_task(db, owner, "lipsync", "promo")
    ingest(owner, task.id, "video", samples["video"])
    ingest(owner, task.id, "audio", samples["audio"])
    return task.id


def _drive(db: Session, sim, storage, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_worker.step(db, sim, storage)
        db.expire_all()
        status = db.get(Run, run_id).status
        db.commit()
        if status == RunStatus.SUCCEEDED:
            return
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not succeed")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_rename(db: Session) -> None:
    ann, eve = make_user(db, "ann@example.com"), make_user(db, "eve@example.com")
    task = tasks.create_task(db, ann, "lipsync", "old")
    assert tasks.rename_task(db, ann, task.id, "  Spanish   promo ").name == "Spanish promo"
    with pytest.raises(TaskError):
        tasks.rename_task(db, ann, task.id, "   ")
    with pytest.raises(TaskError):
        tasks.rename_task(db, ann, task.id, "x" * 121)
    with pytest.raises(NotFound):
        tasks.rename_task(db, eve, task.id, "mine now")
    assert tasks.get_task(db, ann, task.id).name == "Spanish promo"


def test_delete_removes_every_file_and_keeps_the_ledger(
    db: Session, samples, local_storage: Path, tmp_path: Path
) -> None:
    ann, eve = make_user(db, "ann@example.com"), make_user(db, "eve@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    keep = _task(db, ann, samples)  # another task of hers: untouched
    task_id = _task(db, ann, samples)
    run = runs.start_run(db, ann, task_id)
    sim = Simulator(tmp_path / "sim", delay_s=0)
    storage = LocalStorage(local_storage)
    _drive(db, sim, storage, run.id)
    before = _files(local_storage)
    mine = [p for p in before if task_id in p.as_posix()]
    assert len(mine) >= 3  # two inputs and the result

    with pytest.raises(NotFound):
        uploads.delete_task(eve, task_id)
    assert uploads.delete_task(ann, task_id) == len(mine)
    db.expire_all()  # deleted in its own session: read it afresh
    assert [p for p in _files(local_storage) if task_id in p.as_posix()] == []
    assert any(keep in p.as_posix() for p in _files(local_storage))
    with pytest.raises(NotFound):
        tasks.get_task(db, ann, task_id)
    assert [r.task.id for r in tasks.list_tasks(db, ann).rows] == [keep]
    with pytest.raises(NotFound):
        runs.result_of(db, ann, run.id)
    # The money stays on record.
    entries = db.exec(select(LedgerEntry).where(LedgerEntry.reference == run.id)).all()
    assert [e.diff for e in entries] == [-500]
    assert ledger.ledger_sum(db, ann) == ledger.balance_of(db, ann) == 500
    assert db.exec(select(TaskInput).where(TaskInput.task_id == task_id)).all() == []
    assert db.get(Task, task_id).deleted_at is not None


def test_a_running_task_is_not_deleted(db: Session, samples) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    task_id = _task(db, ann, samples)
    runs.start_run(db, ann, task_id)
    with pytest.raises(tasks.TaskBusy) as err:
        uploads.delete_task(ann, task_id)
    assert "running" in err.value.message
    assert tasks.get_task(db, ann, task_id)


def test_cancel_a_queued_run_refunds_once(db: Session, samples) -> None:
    ann, eve = make_user(db, "ann@example.com"), make_user(db, "eve@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    task_id = _task(db, ann, samples)
    run = runs.start_run(db, ann, task_id)
    assert runs.cancel_run(db, eve, run.id) is False  # not hers
    assert runs.cancel_run(db, ann, run.id) is True
    assert runs.cancel_run(db, ann, run.id) is False  # once
    assert runs.fail_run(db, run.id, "late failure") is False  # a canceled run stays canceled
    db.expire_all()
    done = db.get(Run, run.id)
    assert done.status == RunStatus.CANCELED and done.refunded_at
    refunds = db.exec(select(LedgerEntry).where(LedgerEntry.action == "refund")).all()
    assert [(r.diff, r.reference) for r in refunds] == [(500, run.id)]
    assert ledger.balance_of(db, ann) == 1_000 == ledger.ledger_sum(db, ann)
    runs.start_run(db, ann, task_id)  # the task is free again


def test_a_submitted_run_cannot_be_canceled(
    db: Session, samples, tmp_path: Path, local_storage: Path
) -> None:
    storage = LocalStorage(local_storage)
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1_000, "topup")
    run = runs.start_run(db, ann, _task(db, ann, samples))
    run_worker.submit_queued(
        db, Simulator(tmp_path / "sim", delay_s=5), storage, run_worker.StepReport()
    )
    assert runs.cancel_run(db, ann, run.id) is False
    db.expire_all()
    assert db.get(Run, run.id).status == RunStatus.PROCESSING
    assert ledger.balance_of(db, ann) == 500


def test_concurrent_cancels_and_a_submit_refund_at_most_once(
    database_url: str, samples, tmp_path: Path, local_storage: Path
) -> None:
    storage = LocalStorage(local_storage)
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        ledger.change_balance(db, ann, 1_000, "topup")
        run_id = runs.start_run(db, ann, _task(db, ann, samples)).id
    sim = Simulator(tmp_path / "sim", delay_s=5)
    barrier = threading.Barrier(9)
    results: list[object] = []

    def cancel() -> None:
        with session_scope() as db:
            barrier.wait()
            results.append(runs.cancel_run(db, ann, run_id))

    def submit() -> None:
        with session_scope() as db:
            barrier.wait()
            run_worker.submit_queued(db, sim, storage, run_worker.StepReport())

    threads = [threading.Thread(target=cancel) for _ in range(8)] + [
        threading.Thread(target=submit)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_scope() as db:
        run = db.get(Run, run_id)
        refunds = db.exec(select(LedgerEntry).where(LedgerEntry.action == "refund")).all()
        assert results.count(True) == len(refunds) <= 1
        assert (run.status == RunStatus.CANCELED) == (len(refunds) == 1)
        assert ledger.ledger_sum(db, ann) == ledger.balance_of(db, ann)


def test_failure_reasons_are_plain() -> None:
    dump = (
        "ffmpeg version 6.1 Copyright (c) 2000-2023\n[png @ 0x55d1c0a2b4c0] Invalid PNG signature"
        "\nError while decoding stream #0:0: Invalid data found when processing input"
    )
    assert runs.plain_reason(dump) == runs.GENERIC_FAILURE
    assert runs.plain_reason("x" * 500) == runs.GENERIC_FAILURE
    assert runs.plain_reason("") == runs.GENERIC_FAILURE
    assert runs.plain_reason("The generation timed out.") == "The generation timed out."


def test_a_picture_no_model_can_use_is_refused(db: Session, tmp_path: Path) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "talking-photo", "tiny")
    tiny = make_image(tmp_path / "dot.png", size="1x1")
    with pytest.raises(TaskError) as err:
        ingest(ann, task.id, "image", tiny)
    assert err.value.code == "too_small" and "1×1" in err.value.message
    small_video = make_video(tmp_path / "small.mp4", seconds=1, size="32x32")
    swap = tasks.create_task(db, ann, "faceswap", "small")
    with pytest.raises(TaskError) as err:
        ingest(ann, swap.id, "video", small_video)
    assert err.value.code == "too_small"


def test_run_finished_mail_once_per_run_and_never_when_off(
    db: Session, samples, tmp_path: Path, local_storage: Path, monkeypatch
) -> None:
    sent: list = []
    monkeypatch.setattr(run_mails, "send_all", lambda mails: sent.extend(mails) or len(mails))
    ann, bob = make_user(db, "ann@example.com"), make_user(db, "bob@example.com")
    for user in (ann, bob):
        ledger.change_balance(db, user, 1_000, "topup")
    db.get(User, bob).run_mails = False
    db.commit()
    ok = runs.start_run(db, ann, _task(db, ann, samples))
    bad = runs.start_run(db, ann, _task(db, ann, samples))
    quiet = runs.start_run(db, bob, _task(db, bob, samples))
    runs.fail_run(db, bad.id, "[h264 @ 0x5581] broken\nmore")
    runs.fail_run(db, quiet.id, "The generation timed out.")
    sim = Simulator(tmp_path / "sim", delay_s=0)
    storage = LocalStorage(local_storage)
    _drive(db, sim, storage, ok.id)
    assert run_mails.send_finished(db) == 2
    assert run_mails.send_finished(db) == 0  # once
    by_kind = {m.kind: m for m in sent}
    assert set(by_kind) == {"run_succeeded", "run_failed"} and {m.to for m in sent} == {
        "ann@example.com"
    }
    assert f"/tasks/{ok.task_id}" in by_kind["run_succeeded"].text
    failed = by_kind["run_failed"].text
    assert runs.GENERIC_FAILURE in failed and "500 tokens" in failed and "0x5581" not in failed
