"""Runs: start (debit + record in one batch), succeed, fail and refund exactly once; a result for
its owner only. The worker's steps that drive them are in `run_worker`."""

from __future__ import annotations

import logging
import re

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    String,
    and_,
    exists,
    func,
    insert,
    literal,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.db import Batch, end_read, refresh_loaded, run_batch
from vgen_app.models import (
    EnumText,
    LedgerAction,
    LedgerEntry,
    Run,
    RunStatus,
    Task,
    TaskInput,
    UTCDateTime,
    is_id,
    new_id,
)
from vgen_app.services import changes, ledger, tasks
from vgen_app.services.errors import NotFound, TaskError
from vgen_app.services.tasks import IN_FLIGHT, spec_of

log = logging.getLogger("vgen.runs")


class InsufficientTokens(TaskError):
    def __init__(self, price: int, balance: int) -> None:
        super().__init__(
            "insufficient_tokens",
            f"This run costs {price:,} tokens and your balance is {balance:,}. Top up to run it.",
        )
        self.price = price
        self.balance = balance


# --- starting ---------------------------------------------------------------------------------------


def start_run(db: Session, owner_id: str, task_id: str) -> Run:
    """Debit the price and create the run (attempt N) in one batch; the worker submits it.

    Run and Regenerate are the same: a new run from the stored inputs. The checks before the batch
    give clear answers; the batch's own guards (task idle, debit applied) close every race.
    """
    tasks.lock_idle_task(db, owner_id, task_id, tasks.BUSY_RUNNING)
    task = db.get(Task, task_id)
    assert task is not None
    spec = spec_of(task)
    inputs = inputs_of_in_txn(db, task_id)
    missing = [s.label for s in spec.slots if s.name not in inputs]
    if missing:
        db.rollback()
        raise TaskError("missing_inputs", f"Upload these first: {', '.join(missing)}.")
    price = spec.price_for(float(inputs[spec.output_from]["duration_s"] or 0))
    attempt = 1 + int(
        db.exec(select(func.coalesce(func.max(Run.attempt), 0)).where(Run.task_id == task_id)).one()
    )
    run_id, now = new_id(), clock.now()
    owned = exists().where(col(Task.id) == task_id, col(Task.owner_id) == owner_id)
    op = ledger.BalanceOp(
        owner_id,
        -price,
        LedgerAction.USED,
        reference=run_id,
        note=f"{spec.title}, attempt {attempt}",
        guard=and_(owned, tasks.idle(task_id)),
        now=now,
    )
    next_attempt = (
        select(func.coalesce(func.max(Run.attempt), 0) + 1)
        .where(col(Run.task_id) == task_id)
        .scalar_subquery()
    )
    values = {
        "id": literal(run_id, String()),
        "task_id": literal(task_id, String()),
        "owner_id": literal(owner_id, String()),
        "attempt": next_attempt,
        "status": literal(RunStatus.QUEUED, EnumText(RunStatus)),
        "progress": literal(0.0, Float()),
        "price": literal(price, BigInteger()),
        "model": literal(spec.id, String()),
        "inputs": literal(inputs, JSON()),
        "submit_attempts": literal(0, Integer()),
        "created_at": literal(now, UTCDateTime()),
        "updated_at": literal(now, UTCDateTime()),
    }
    batch = Batch()  # the task row is locked above (on D1 the guard stands in for the lock)
    op.add_to(batch)
    batch.add(
        insert(Run)
        .from_select(list(values), select(*values.values()).where(op.applied()))
        .returning(col(Run.id)),
        "run",
    )
    try:
        results = run_batch(db, batch.statements)
    except IntegrityError:  # the task was deleted meanwhile (the run's foreign key)
        db.rollback()
        raise NotFound() from None
    if not batch.rows(results, "entry"):  # the guard failed: another start won the race
        db.rollback()
        raise tasks.TaskBusy(tasks.BUSY_RUNNING)
    change = op.change_of(db, batch.rows(results, "entry"))
    if not change.applied:
        db.commit()  # the refused attempt stays recorded
        raise InsufficientTokens(price, change.old_balance)
    refresh_loaded(db, Task, task_id)
    run = db.get(Run, run_id)
    assert run is not None and batch.rows(results, "run")
    changes.touch(db, owner_id)
    db.commit()
    return run


def inputs_of_in_txn(db: Session, task_id: str) -> dict[str, dict]:
    """What a run is made from: a copy of the slots' files as they are now."""
    rows = db.exec(select(TaskInput).where(TaskInput.task_id == task_id)).all()
    return {
        r.slot: {
            "storage_key": r.storage_key,
            "filename": r.filename,
            "size_bytes": r.size_bytes,
            "duration_s": r.media.get("duration_s"),
            "kind": r.media.get("kind"),
            "container": r.media.get("container"),
        }
        for r in rows
    }


def result_of(db: Session, owner_id: str, run_id: str) -> Run:
    """A succeeded run's result, for its owner only: anyone else gets NotFound."""
    run = db.get(Run, run_id) if is_id(run_id) else None
    end_read(db)
    if (
        run is None
        or run.owner_id != owner_id
        or run.status != RunStatus.SUCCEEDED
        or not run.result_key
    ):
        raise NotFound("result")
    return run


# --- finishing ----------------------------------------------------------------------------------------


def fail_run(db: Session, run_id: str, error: str) -> bool:
    """Fail an unfinished run and refund its price — exactly once, whoever calls it how often.

    One batch: the run's conditional UPDATE (in flight → failed; on PostgreSQL it holds the run's
    row lock until commit), then the refund, guarded on the run being failed and not refunded
    yet. A second call, concurrent or later, finds the run not in flight and the refund written."""
    return _end_and_refund(db, run_id, error, RunStatus.FAILED, col(Run.status).in_(IN_FLIGHT))


CANCELED = "Canceled before it started: the tokens are back."


def cancel_run(db: Session, owner_id: str, run_id: str) -> bool:
    """Cancel the owner's run that is still queued (not handed to the generation service yet)
    and refund it — exactly once, the same guard as a failure. False when it is not cancelable
    (anyone else's, already submitted, finished, or canceled before): nothing changes."""
    if not is_id(run_id):
        return False
    still_queued = and_(
        col(Run.owner_id) == owner_id,
        col(Run.status) == RunStatus.QUEUED,
        col(Run.provider_job_id).is_(None),
    )
    return _end_and_refund(db, run_id, CANCELED, RunStatus.CANCELED, still_queued)


GENERIC_FAILURE = "The generation failed on these materials. Try other files; the tokens are back."
_TECHNICAL = re.compile(r"0x[0-9a-f]{6,}|\n|Traceback|ffmpeg|libav|@ 0x", re.IGNORECASE)


def plain_reason(error: str) -> str:
    """What the user is shown of a failure: a short plain sentence. A technical dump (a tool's
    stderr, memory addresses, several lines) becomes a generic reason; the operator's log keeps
    the detail."""
    error = (error or "").strip()
    if not error or len(error) > 200 or _TECHNICAL.search(error):
        return GENERIC_FAILURE
    return error


def _end_and_refund(
    db: Session, run_id: str, error: str, status: RunStatus, unfinished: ColumnElement[bool]
) -> bool:
    """End a run that is `unfinished` as `status`, with its refund, in one batch (see fail_run)."""
    shown = plain_reason(error)
    found = db.exec(select(Run.owner_id, Run.price, Run.attempt).where(Run.id == run_id)).first()
    if found is None:
        db.rollback()
        return False
    owner_id, price, attempt = found
    now = clock.now()
    refunded = exists().where(
        col(LedgerEntry.user_id) == owner_id,
        col(LedgerEntry.action) == LedgerAction.REFUND,
        col(LedgerEntry.reference) == run_id,
    )
    ended_here = exists().where(
        col(Run.id) == run_id,
        col(Run.status) == status,
        col(Run.refunded_at).is_not(None),
    )
    op = ledger.BalanceOp(
        owner_id,
        price,
        LedgerAction.REFUND,
        reference=run_id,
        note=f"refund of attempt {attempt}",
        guard=and_(ended_here, ~refunded),
        now=now,
    )
    batch = Batch()
    batch.add(
        update(Run)
        .where(col(Run.id) == run_id, unfinished)
        .values(
            status=status,
            error=shown,
            finished_at=now,
            updated_at=now,
            refunded_at=now,
        )
    )
    op.add_to(batch)
    results = run_batch(db, batch.statements)
    if not batch.rows(results, "entry"):
        db.rollback()
        return False
    refresh_loaded(db, Run, run_id)
    changes.touch(db, owner_id)
    db.commit()
    log.info("run %s %s (%s); refunded %d tokens", run_id, status, error[:4000], price)
    return True


def succeed_run(
    db: Session, run_id: str, result_key: str, size: int, poster_key: str | None = None
) -> bool:
    now = clock.now()
    result = db.exec(
        update(Run)
        .where(col(Run.id) == run_id, col(Run.status) == RunStatus.PROCESSING)
        .values(
            status=RunStatus.SUCCEEDED,
            progress=1.0,
            result_key=result_key,
            result_bytes=size,
            poster_key=poster_key,
            finished_at=now,
            updated_at=now,
        )
        .returning(col(Run.owner_id))
    )
    owners = list(result.scalars())
    changes.touch(db, *owners)
    db.commit()
    return len(owners) == 1
