"""Tasks and their inputs: ownership, listing, uploads into slots."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, Update, bindparam, case, delete, exists, func, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from vgen_app import catalog, clock
from vgen_app.adapters.media import MediaError, MediaInfo
from vgen_app.catalog import ModelSpec, Slot
from vgen_app.db import end_read, raw_read
from vgen_app.models import Run, RunStatus, Task, TaskInput, is_id, new_id
from vgen_app.services import changes
from vgen_app.services.errors import NotFound, TaskError

log = logging.getLogger("vgen.tasks")

IN_FLIGHT = (RunStatus.QUEUED, RunStatus.PROCESSING)

# What a user is told when a task's run in flight stops what they asked for.
BUSY_RUNNING = "This task is already running."
BUSY_INPUTS = "A run is in progress: inputs can be replaced when it has finished."


class TaskBusy(TaskError):
    def __init__(self, message: str) -> None:
        super().__init__("busy", message)


def lock_statement(owner_id: str, task_id: str) -> Update:
    """Touch the owner's task row: a write lock that serializes run creation and input changes
    (on PostgreSQL a row lock until commit; SQLite and D1 serialize writers anyway). It matches
    no row for anyone else's task."""
    return (
        update(Task)
        .where(
            col(Task.id) == task_id,
            col(Task.owner_id) == owner_id,
            col(Task.deleted_at).is_(None),
        )
        .values(updated_at=clock.now())
    )


def idle(task_id: str) -> ColumnElement[bool]:
    """SQL condition: the task has no run in flight."""
    return ~exists().where(col(Run.task_id) == task_id, col(Run.status).in_(IN_FLIGHT))


def lock_idle_task(db: Session, owner_id: str, task_id: str, busy_message: str) -> None:
    """Lock the owner's task row, then check that no run is in flight (inside the caller's
    transaction): NotFound for anyone else's task, TaskBusy with `busy_message` if it runs."""
    if db.exec(lock_statement(owner_id, task_id)).rowcount != 1:
        db.rollback()
        raise NotFound()
    if run_in_flight(db, task_id):
        db.rollback()
        raise TaskBusy(busy_message)


# --- tasks -----------------------------------------------------------------------------------------


def create_task(db: Session, owner_id: str, model_id: str, name: str | None = None) -> Task:
    spec = catalog.get(model_id)
    if spec is None:
        raise TaskError("unknown_model", "Choose one of the available models.")
    name = (name or "").strip()[:120] or f"{spec.title} {clock.now():%b %d, %H:%M}"
    task = Task(owner_id=owner_id, model=spec.id, name=name)
    db.add(task)
    db.commit()
    return task


NAME_MAX = 120


def rename_task(db: Session, owner_id: str, task_id: str, name: str) -> Task:
    """A new name for the owner's task (1 to NAME_MAX characters, trimmed)."""
    name = " ".join((name or "").split())
    if not name:
        raise TaskError("empty_name", "Give the task a name.")
    if len(name) > NAME_MAX:
        raise TaskError("long_name", f"A name has at most {NAME_MAX} characters.")
    if not is_id(task_id):
        raise NotFound()
    result = db.exec(lock_statement(owner_id, task_id).values(name=name))
    if result.rowcount != 1:
        db.rollback()
        raise NotFound()
    changes.touch(db, owner_id)
    db.commit()
    return get_task(db, owner_id, task_id)


BUSY_DELETE = "This task is running. Wait until the run finishes (or cancel it), then delete it."


def delete_task(db: Session, owner_id: str, task_id: str) -> list[str]:
    """Delete the owner's idle task: its inputs go, its runs forget their files, the task is
    marked deleted (its row stays: ledger entries name its runs). Returns the storage keys of its
    files, for the caller to remove from storage once this has committed (`uploads.purge`)."""
    if not is_id(task_id):
        raise NotFound()
    lock_idle_task(db, owner_id, task_id, BUSY_DELETE)
    keys = list(db.exec(select(TaskInput.storage_key).where(TaskInput.task_id == task_id)))
    for result_key, poster_key in db.exec(
        select(Run.result_key, Run.poster_key).where(Run.task_id == task_id)
    ):
        keys += [k for k in (result_key, poster_key) if k]
    db.exec(delete(TaskInput).where(col(TaskInput.task_id) == task_id))
    db.exec(
        update(Run)
        .where(col(Run.task_id) == task_id)
        .values(result_key=None, poster_key=None, inputs={})
    )
    db.exec(update(Task).where(col(Task.id) == task_id).values(deleted_at=clock.now()))
    changes.touch(db, owner_id)
    db.commit()
    return keys


def get_task(db: Session, owner_id: str, task_id: str) -> Task:
    task = db.get(Task, task_id) if is_id(task_id) else None
    end_read(db)
    if task is None or task.owner_id != owner_id or task.deleted_at is not None:
        raise NotFound()
    return task


def spec_of(task: Task) -> ModelSpec:
    spec = catalog.get(task.model)
    if spec is None:  # a model removed from the catalog: its tasks stay readable, not runnable
        raise TaskError("unknown_model", "This model is no longer available.")
    return spec


class TaskBrief(NamedTuple):
    """What the task list shows of a task (read as plain columns, no ORM object)."""

    id: str
    owner_id: str
    name: str
    model: str
    created_at: datetime


@dataclass(frozen=True)
class TaskRow:
    task: TaskBrief
    last_status: str | None
    last_progress: float
    runs: int
    # The newest succeeded run that has a poster frame (its thumbnail), None if there is none.
    poster_run_id: str | None = None


@dataclass(frozen=True)
class TaskPage:
    rows: list[TaskRow]
    page: int
    pages: int
    total: int  # the tasks that match the filters
    has_tasks: bool = True  # the owner has any task at all (whatever the filters)


STATUS_FILTERS = ("not_run", "in_flight", *(s.value for s in RunStatus))


@functools.lru_cache(maxsize=32)
def _list_statements(status: str, by_model: bool, by_search: bool) -> tuple[Select, Select, Select]:
    """The task list's three statements for one shape of filters, built once (the values are
    bound parameters: owner, status, model, search, limit, offset): the count, whether the owner
    has any task, and the page — the page's tasks with, per task, its run count, its newest run's
    status and progress and the id of its newest succeeded run with a poster, in one statement
    whose run part is bounded by the page (one grouped row per task, however many runs), and on
    every row the count of all that match (an uncorrelated subquery: computed once)."""
    mine = [col(Task.owner_id) == bindparam("owner"), col(Task.deleted_at).is_(None)]
    filters: list[ColumnElement[bool]] = []
    if status:
        newest_status = (
            select(Run.status)
            .where(col(Run.task_id) == col(Task.id))
            .order_by(col(Run.attempt).desc())
            .limit(1)
            .correlate(Task)
            .scalar_subquery()
        )
        if status == "not_run":
            filters.append(~exists().where(col(Run.task_id) == col(Task.id)).correlate(Task))
        elif status == "in_flight":
            filters.append(newest_status.in_([s.value for s in IN_FLIGHT]))
        else:
            filters.append(newest_status == bindparam("status"))
    if by_model:
        filters.append(col(Task.model) == bindparam("model"))
    if by_search:
        filters.append(col(Task.name).ilike(bindparam("search"), escape="\\"))
    count = select(func.count()).select_from(Task).where(*mine, *filters)
    any_task = select(exists().where(*mine))
    page = (
        select(Task.id, Task.owner_id, Task.name, Task.model, Task.created_at)
        .where(*mine, *filters)
        .order_by(col(Task.created_at).desc(), col(Task.id))
        .limit(bindparam("limit"))
        .offset(bindparam("offset"))
        .cte("page")
    )
    succeeded = col(Run.status) == RunStatus.SUCCEEDED.value
    with_poster = succeeded & col(Run.poster_key).is_not(None)
    per_task = (
        select(
            col(Run.task_id).label("task_id"),
            func.count().label("n"),
            func.max(Run.attempt).label("newest"),
            func.max(case((with_poster, col(Run.attempt)))).label("poster"),
        )
        .where(col(Run.task_id).in_(select(page.c.id)))
        .group_by(Run.task_id)
        .subquery("per_task")
    )
    newest, poster = aliased(Run, name="newest"), aliased(Run, name="poster")
    rows = (
        select(
            count.scalar_subquery().label("total"),
            page.c.id,
            page.c.owner_id,
            page.c.name,
            page.c.model,
            page.c.created_at,
            per_task.c.n,
            newest.status,
            newest.progress,
            poster.id,
        )
        .select_from(page)
        .outerjoin(per_task, per_task.c.task_id == page.c.id)
        .outerjoin(newest, (newest.task_id == page.c.id) & (newest.attempt == per_task.c.newest))
        .outerjoin(poster, (poster.task_id == page.c.id) & (poster.attempt == per_task.c.poster))
        .order_by(page.c.created_at.desc(), page.c.id)
    )
    return count, any_task, rows


@raw_read
def list_tasks(
    db: Session,
    owner_id: str,
    page: int = 1,
    per_page: int = 20,
    status: str = "",
    model: str = "",
    search: str = "",
) -> TaskPage:
    """My tasks, newest first, with the status of each one's latest run and the id of its
    newest succeeded run with a poster frame (one statement, the page with the count; one more
    past the last page, and one when nothing matches the filters; no N+1, nothing that grows
    with the run count; Core rows, no ORM objects).

    Filters: `status` "" (any), "not_run" (no run yet), "in_flight" (the newest run is queued or
    processing) or a RunStatus value (the newest run's status); `model` a model id ("" any);
    `search` a case-insensitive substring of the name (LIKE wildcards in it match themselves).
    """
    if status and status not in STATUS_FILTERS:
        raise TaskError("unknown_filter", "Choose one of the statuses offered.")
    search = " ".join(search.replace("\x00", "").split())[:120]  # PostgreSQL refuses NUL
    params: dict[str, Any] = {"owner": owner_id, "status": status, "model": model[:32]}
    if search:
        escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params["search"] = f"%{escaped}%"
    count, any_task, rows = _list_statements(status, bool(model), bool(search))
    conn = db.connection()
    page = max(1, page)
    params.update(limit=per_page, offset=(page - 1) * per_page)
    found = conn.execute(rows, params).all()  # the page and the count in one statement
    if found:
        total = int(found[0].total)
    elif page == 1:
        total = 0
    else:  # past the last page (tasks deleted meanwhile, or a typed URL): the last page
        total = int(conn.execute(count, params).scalar_one())
        if total:
            page = -(-total // per_page)
            params.update(offset=(page - 1) * per_page)
            found = conn.execute(rows, params).all()
            total = int(found[0].total) if found else 0
    has_tasks = total > 0
    if not has_tasks and (status or model or search):  # nothing matches: are there tasks at all?
        has_tasks = bool(conn.execute(any_task, params).scalar_one())
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    end_read(db)
    return TaskPage(
        [
            TaskRow(
                TaskBrief(task_id, owner, name, model_id, created_at),
                str(last_status) if last_status is not None else None,
                float(progress or 0.0),
                int(n or 0),
                poster_id,
            )
            for _, task_id, owner, name, model_id, created_at, n, last_status, progress, poster_id in (
                found
            )
        ],
        page,
        pages,
        total,
        bool(has_tasks),
    )


# --- inputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskView:
    """What the task page shows, read in one session: the task, its inputs, its newest runs."""

    task: Task
    inputs: dict[str, TaskInput]
    runs: list[Run]  # newest attempt first, at most `runs_limit`
    runs_total: int

    @property
    def in_flight(self) -> bool:
        # A task runs once at a time and its run in flight is always its newest attempt.
        return any(r.status in IN_FLIGHT for r in self.runs[:1])


_VIEW_TASK = select(Task.__table__).where(col(Task.id) == bindparam("task_id"))
_VIEW_INPUTS = select(TaskInput.__table__).where(col(TaskInput.task_id) == bindparam("task_id"))
_VIEW_RUNS = (
    select(Run.__table__)
    .where(col(Run.task_id) == bindparam("task_id"), col(Run.owner_id) == bindparam("owner"))
    .order_by(col(Run.attempt).desc())
    .limit(bindparam("limit"))
)
_VIEW_RUN_COUNT = select(func.count()).select_from(Run).where(Run.task_id == bindparam("task_id"))


@raw_read
def task_view(db: Session, owner_id: str, task_id: str, runs_limit: int = 20) -> TaskView:
    """The task page's data for its owner (NotFound for anyone else): at most four bounded
    statements, built once, one thread hop for the caller — the page refreshes this every second
    while a run is in flight. Read-only rows (Core: each row has the model's attribute names), no
    ORM objects."""
    conn = db.connection()
    task = conn.execute(_VIEW_TASK, {"task_id": task_id}).first() if is_id(task_id) else None
    if task is None or task.owner_id != owner_id or task.deleted_at is not None:
        end_read(db)
        raise NotFound()
    ids = {"task_id": task.id, "owner": owner_id, "limit": runs_limit}
    inputs = {row.slot: row for row in conn.execute(_VIEW_INPUTS, ids)}
    run_rows = list(conn.execute(_VIEW_RUNS, ids))
    total = len(run_rows)
    if total == runs_limit:
        total = int(conn.execute(_VIEW_RUN_COUNT, ids).scalar_one())
    end_read(db)
    return TaskView(task, inputs, run_rows, total)  # type: ignore[arg-type]


@raw_read
def task_view_or_none(
    db: Session, owner_id: str, task_id: str, runs_limit: int = 20
) -> TaskView | None:
    """`task_view`, or None when this owner has no such task (deleted, another user's, a typed
    id): the task page's read beside the session check (`SessionState.current_user_and`)."""
    try:
        return task_view(db, owner_id, task_id, runs_limit)
    except NotFound:
        return None


def run_in_flight(db: Session, task_id: str) -> bool:
    return not db.exec(select(idle(task_id))).one()


def upload_target(db: Session, owner_id: str, task_id: str, slot_name: str) -> tuple[Task, Slot]:
    """May this user upload into this slot now? (Checked before streaming and again on attach.)"""
    task = get_task(db, owner_id, task_id)
    slot = spec_of(task).get_slot(slot_name)
    if slot is None:
        raise TaskError("unknown_slot", "This model has no such input.")
    busy = run_in_flight(db, task.id)
    end_read(db)
    if busy:
        raise TaskBusy(BUSY_INPUTS)
    return task, slot


def extension_of(filename: str) -> str:
    return Path(filename or "").suffix.lower().lstrip(".")


MIN_PIXELS = 64  # the smallest picture side a model can work with


def check_size(slot: Slot, size: int) -> None:
    """The slot's size limit: checked while a file streams in and again once it is whole."""
    if size > slot.max_bytes:
        raise TaskError("too_big", f"The file is larger than {slot.max_mb} MB.")


def check_file(slot: Slot, filename: str, size: int) -> None:
    """The slot's rules a file must meet before it is probed: not empty, size, format."""
    if size <= 0:
        raise TaskError("empty", "The file is empty.")
    check_size(slot, size)
    if extension_of(filename) not in slot.formats:
        raise TaskError(
            "format", f"{slot.label}: use one of these formats: {', '.join(slot.formats)}."
        )


def check_media(slot: Slot, info: MediaInfo) -> None:
    """The slot's rules on the probed media: kind and duration. Messages say what is wrong and
    what fits."""
    if info.kind != slot.kind:
        raise TaskError(
            "kind", f"{slot.label} must be {_article(slot.kind)}, not {_article(info.kind)}."
        )
    if slot.max_seconds and info.duration_s and info.duration_s > slot.max_seconds + 0.5:
        raise TaskError(
            "too_long",
            f"The {slot.kind} is {info.duration_s:.0f} s long; the limit is {slot.max_seconds} s.",
        )
    if slot.kind in ("video", "audio") and not info.duration_s:
        raise TaskError("no_duration", f"The {slot.kind} has no readable duration.")
    if slot.kind in ("video", "image") and min(info.width or 0, info.height or 0) < MIN_PIXELS:
        raise TaskError(
            "too_small",
            f"The {slot.kind} is {info.width or 0}×{info.height or 0} px: no model can use it. "
            f"Use one of at least {MIN_PIXELS}×{MIN_PIXELS} px.",
        )


def _article(kind: str) -> str:
    """A media kind with its article, as a sentence says it: "a video", "an image"."""
    named = {"audio": "an audio file", "image": "an image", "video": "a video"}
    if kind in named:
        return named[kind]
    return f"{'an' if kind[:1].lower() in 'aeiou' else 'a'} {kind}" if kind else "a file"


def media_error(exc: MediaError) -> TaskError:
    return TaskError("not_media", str(exc) or "This file is not readable media.")


def storage_key(task_id: str, slot: str, filename: str) -> str:
    ext = extension_of(filename) or "bin"
    return f"inputs/{task_id}/{slot}/{new_id()}.{ext}"


def attach_input(
    db: Session,
    owner_id: str,
    task_id: str,
    slot_name: str,
    key: str,
    filename: str,
    size: int,
    info: MediaInfo,
) -> tuple[TaskInput, str | None]:
    """Record the stored file in its slot; returns the input and the replaced file's key."""
    lock_idle_task(db, owner_id, task_id, BUSY_INPUTS)  # checked again, under the lock
    existing = db.exec(
        select(TaskInput).where(TaskInput.task_id == task_id, TaskInput.slot == slot_name)
    ).first()
    old_key = existing.storage_key if existing else None
    row = existing or TaskInput(
        task_id=task_id, slot=slot_name, storage_key=key, filename="", size_bytes=0, media={}
    )
    row.storage_key, row.filename, row.size_bytes = key, Path(filename).name[:255], size
    row.media, row.created_at = info.as_dict(), clock.now()
    db.add(row)
    db.commit()
    return row, old_key


def _priced(task: Task, inputs: dict[str, TaskInput]) -> tuple[ModelSpec, float] | None:
    spec = catalog.get(task.model)
    if spec is None or any(s.name not in inputs for s in spec.slots):
        return None
    return spec, float(inputs[spec.output_from].media.get("duration_s") or 0)


def price_of(task: Task, inputs: dict[str, TaskInput]) -> int | None:
    """The price of one run, once every slot has its file."""
    priced = _priced(task, inputs)
    return priced[0].price_for(priced[1]) if priced else None


def price_note(task: Task, inputs: dict[str, TaskInput]) -> str:
    """How the price of a run is made ("12 s × 50 tokens per second", or the minimum), or ""."""
    priced = _priced(task, inputs)
    return priced[0].price_note(priced[1]) if priced else ""
