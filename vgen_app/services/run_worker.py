"""The generation worker's steps: submit what is queued, poll what is in flight, keep each result
in our storage at once (the generation service forgets finished jobs), and fail a run (with its
refund, `runs.fail_run`) when it can never finish."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters import generation as gen
from vgen_app.adapters import media
from vgen_app.adapters.storage import Storage, StorageError
from vgen_app.config import get_settings
from vgen_app.db import end_read
from vgen_app.models import Run, RunStatus, User, new_id
from vgen_app.services import changes, outbox
from vgen_app.services.runs import fail_run, succeed_run

log = logging.getLogger("vgen.runs")

# A run the generation service refuses this many times fails (and is refunded).
MAX_SUBMIT_ATTEMPTS = 5


@dataclass
class StepReport:
    """What one worker step did, counted: the worker logs it when anything happened, the tests
    read it."""

    submitted: int = 0
    polled: int = 0
    succeeded: int = 0
    failed: int = 0


def _timed_out(run: Run) -> bool:
    started = run.submitted_at or run.created_at
    return clock.now() - started > timedelta(seconds=get_settings().run_timeout_seconds)


def _oldest(db: Session, status: RunStatus, since: Any, limit: int) -> list[Run]:
    """The runs in `status`, longest waiting first (by the `since` column); the read ends."""
    rows = list(db.exec(select(Run).where(Run.status == status).order_by(col(since)).limit(limit)))
    end_read(db)
    return rows


def submit_queued(
    db: Session,
    provider: gen.GenerationProvider,
    storage: Storage,
    report: StepReport,
    limit: int = 10,
) -> None:
    """Hand the oldest queued runs to the generation service; fail the ones it never accepts
    (timed out, or refused MAX_SUBMIT_ATTEMPTS times), with their refund."""
    queued = _oldest(db, RunStatus.QUEUED, Run.created_at, limit)
    for run in queued:
        if _timed_out(run):
            report.failed += fail_run(
                db, run.id, "The generation service did not accept the job in time."
            )
            continue
        try:
            urls = {slot: storage.url_for(i["storage_key"]) for slot, i in run.inputs.items()}
            job_id = provider.submit(run.model, urls, {"client_ref": run.id})
        except gen.JobRejected as exc:
            report.failed += fail_run(db, run.id, f"The generation service refused the job: {exc}")
            continue
        except (gen.GenerationError, StorageError, OSError) as exc:
            log.warning("run %s: submit failed (%s); will retry", run.id, exc)
            attempts = run.submit_attempts + 1  # read before the update syncs the object
            db.exec(
                update(Run)
                .where(col(Run.id) == run.id)
                .values(submit_attempts=col(Run.submit_attempts) + 1)
            )
            db.commit()
            if attempts >= MAX_SUBMIT_ATTEMPTS:
                report.failed += fail_run(db, run.id, "The generation service is unavailable.")
            continue
        now = clock.now()
        updated = db.exec(
            update(Run)
            .where(col(Run.id) == run.id, col(Run.status) == RunStatus.QUEUED)
            .values(
                status=RunStatus.PROCESSING,
                provider=provider.name,
                provider_job_id=job_id,
                submitted_at=now,
                updated_at=now,
                submit_attempts=col(Run.submit_attempts) + 1,
            )
        )
        if updated.rowcount == 1:
            _log_launch(db, run, provider.name, job_id)
            changes.touch(db, run.owner_id)
        db.commit()
        report.submitted += 1


def _log_launch(db: Session, run: Run, provider: str, job_id: str) -> None:
    user = db.get(User, run.owner_id)
    outbox.record(
        db,
        outbox.GENERATION_LOG,
        {
            "userid": run.owner_id,
            "email": user.email if user else None,
            "taskid": run.task_id,
            "properties": {
                "run_id": run.id,
                "attempt": run.attempt,
                "model": run.model,
                "provider": provider,
                "provider_job_id": job_id,
                "price": run.price,
                "inputs": {
                    slot: {k: i.get(k) for k in ("filename", "size_bytes", "duration_s", "kind")}
                    for slot, i in run.inputs.items()
                },
            },
        },
    )


def poll_in_flight(
    db: Session,
    provider: gen.GenerationProvider,
    storage: Storage,
    report: StepReport,
    limit: int = 50,
) -> None:
    """Ask the service about each run in flight: progress, the result kept, or the failure."""
    running = _oldest(db, RunStatus.PROCESSING, Run.submitted_at, limit)
    for run in running:
        report.polled += 1
        try:
            job = provider.get(run.provider_job_id or "")
        except gen.JobNotFound:
            report.failed += fail_run(db, run.id, "The generation job expired or vanished.")
            continue
        except gen.GenerationError as exc:
            if _timed_out(run):
                report.failed += fail_run(db, run.id, "The generation timed out.")
            else:
                log.warning("run %s: poll failed (%s); will retry", run.id, exc)
            continue
        if job.status == gen.SUCCEEDED:
            kept = keep_result(db, run, job, provider, storage)
            report.succeeded += kept
            if not kept and _timed_out(run):  # a result that can never be downloaded
                report.failed += fail_run(db, run.id, "The result could not be saved in time.")
        elif job.status == gen.FAILED:
            report.failed += fail_run(db, run.id, job.error or "The generation failed.")
        elif _timed_out(run):
            report.failed += fail_run(db, run.id, "The generation timed out.")
        elif abs(job.progress - run.progress) >= 0.01:
            db.exec(
                update(Run)
                .where(col(Run.id) == run.id, col(Run.status) == RunStatus.PROCESSING)
                .values(progress=min(0.99, max(0.0, job.progress)), updated_at=clock.now())
            )
            db.commit()


def keep_result(
    db: Session, run: Run, job: gen.Job, provider: gen.GenerationProvider, storage: Storage
) -> bool:
    """Copy the result into our storage at once: the service forgets finished jobs."""
    # A key of its own per save: if two savers ever raced, the loser deletes only its own copy.
    key = f"results/{run.task_id}/{run.id}-{new_id()[:6]}.mp4"
    with tempfile.TemporaryDirectory(prefix="vgen-result-") as tmp:
        dest = Path(tmp) / "result.mp4"
        try:
            provider.fetch_result(job, dest)
        except gen.JobNotFound:
            fail_run(db, run.id, "The result expired before it could be saved.")
            return False
        except gen.GenerationError as exc:
            log.warning("run %s: fetching the result failed (%s); will retry", run.id, exc)
            return False
        size = dest.stat().st_size
        try:
            storage.put_file(key, dest)
        except (StorageError, OSError) as exc:
            log.warning("run %s: storing the result failed (%s); will retry", run.id, exc)
            return False
        poster = _keep_poster(run, dest, key.removesuffix(".mp4") + ".jpg", storage)
    if not succeed_run(db, run.id, key, size, poster):
        for stored in (key, poster):
            if stored:
                storage.delete(stored)
        return False
    return True


def _keep_poster(run: Run, video: Path, key: str, storage: Storage) -> str | None:
    """A frame of the result for its player and the task list; a result without one still plays."""
    jpeg = video.with_name("poster.jpg")
    try:
        media.make_poster(video, jpeg)
        storage.put_file(key, jpeg)
    except (media.MediaError, StorageError, OSError) as exc:
        log.warning("run %s: no poster frame (%s)", run.id, exc)
        return None
    return key


def step(db: Session, provider: gen.GenerationProvider, storage: Storage) -> StepReport:
    """One round of the worker: submit what is queued, poll what is in flight."""
    report = StepReport()
    submit_queued(db, provider, storage, report)
    poll_in_flight(db, provider, storage, report)
    return report
