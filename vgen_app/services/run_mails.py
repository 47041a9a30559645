"""The run-finished e-mail: once per run that succeeded or failed, unless its owner turned it
off (users.run_mails). The worker calls `send_finished` each round."""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.mail import send_all
from vgen_app.db import end_read
from vgen_app.models import Run, RunStatus, Task, User
from vgen_app.services import emails

log = logging.getLogger("vgen.runs")

ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


def send_finished(db: Session, limit: int = 50) -> int:
    """Mail the owners of runs that ended since the last round; returns how many were sent.

    Each run is claimed first (finished_mail_at set by a conditional UPDATE, committed): two
    workers never both mail it, and a crash after the claim loses at most that one mail rather
    than sending it twice. A canceled run gets no mail: its owner canceled it."""
    rows = db.exec(
        select(Run, User.email, User.run_mails, Task.name)
        .join(User, col(User.id) == col(Run.owner_id))
        .join(Task, col(Task.id) == col(Run.task_id))
        .where(col(Run.status).in_(ENDED), col(Run.finished_mail_at).is_(None))
        .order_by(col(Run.finished_at))
        .limit(limit)
    ).all()
    end_read(db)
    mails = []
    for run, email, wanted, task_name in rows:
        claimed = db.exec(
            update(Run)
            .where(col(Run.id) == run.id, col(Run.finished_mail_at).is_(None))
            .values(finished_mail_at=clock.now())
        ).rowcount
        db.commit()
        if claimed == 1 and wanted:
            mails.append(
                emails.run_finished_mail(
                    email,
                    run.task_id,
                    task_name,
                    run.attempt,
                    run.status == RunStatus.SUCCEEDED,
                    run.error or "",
                    run.price,
                )
            )
    return send_all(mails) if mails else 0
