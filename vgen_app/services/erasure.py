"""Deleting an account (SPEC §9), by its owner (current password required) or by the operator.

What goes: every upload, result and poster of the user in storage, their sessions and one-time
links; their tasks are marked deleted (the rows stay: ledger entries name their runs) and their
runs forget their files and inputs. The user row stays for the ledger, anonymised: the e-mail
becomes `deleted-<id>@deleted.invalid` (the real address is free to sign up again, as a new
account), the password hash an unusable value, the status `blocked` (every session, login, link
and activation check refuses it), `deleted_at` is set, the utm parameters cleared, run mails off.
Kept, as the privacy page says: ledger entries untouched (with the address each was written with:
they are the payment record; the ledger still sums to the balance, which is left as it was),
checkout sessions and payment credits; analytics outbox rows too.

Refused while any of the user's runs is queued or processing (`AccountBusy`): cancel it while it
is still queued, or wait until it finishes.

The rows change first, in one batch (`Batch`: one transaction, one D1 request); the files go once
that has committed (`uploads.purge`: each key tried twice, a failure logged), then every key left
under the user's task folders (`inputs/<task>/`, `results/<task>/`, deleted tasks' too) is swept:
orphans of an earlier failed delete go as well.

`delete_account` and `delete_user` are blocking (bcrypt, database, storage): call them from a
worker thread (`asyncio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Executable, Exists, delete, exists, func, null, update
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.storage import get_storage
from vgen_app.db import Batch, end_read, read_only, run_batch, with_db
from vgen_app.models import (
    OneTimeLink,
    Run,
    Task,
    TaskInput,
    User,
    UserSession,
    UserStatus,
    is_id,
    new_id,
)
from vgen_app.services import account, changes, uploads
from vgen_app.services.errors import AccountError
from vgen_app.services.tasks import IN_FLIGHT

log = logging.getLogger("vgen.erasure")

DELETED_DOMAIN = "deleted.invalid"  # reserved (RFC 2606): never deliverable, refused at sign-up
UNUSABLE_PREFIX = "!deleted:"  # no bcrypt hash starts so: no password ever matches it

BUSY = (
    "A run is in progress. Cancel it while it is still queued, or wait until it finishes, "
    "then delete the account."
)
GONE = "No such account."


class UserGone(AccountError):
    """Unknown, or already deleted: there is nothing to delete or export."""

    def __init__(self, user_id: str, deleted_at: datetime | None = None) -> None:
        super().__init__("not_found", GONE)
        self.user_id = user_id
        self.deleted_at = deleted_at


class AccountBusy(AccountError):
    """A run of the user's is queued or processing: nothing changed."""

    def __init__(self) -> None:
        super().__init__("busy", BUSY)


def deleted_email(user_id: str) -> str:
    return f"deleted-{user_id}@{DELETED_DOMAIN}"


@dataclass(frozen=True)
class ErasedRows:
    """What the database part removed: the storage keys it recorded and every task of the user
    (deleted before or now), whose folders are swept."""

    user_id: str
    deleted_at: datetime
    tasks_deleted: int  # tasks marked deleted now (earlier ones were already)
    sessions: int
    links: int
    keys: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    also_rows: list[dict[str, Any]] = field(default_factory=list)  # RETURNING rows of `also`


@dataclass(frozen=True)
class Erasure:
    """The outcome of a deletion, for the page, the admin API and the CLI."""

    user_id: str
    deleted_at: datetime
    tasks_deleted: int
    sessions: int
    links: int
    files_removed: int
    files_failed: int  # could not be removed (logged as errors for the operator)
    also_rows: list[dict[str, Any]] = field(default_factory=list)  # RETURNING rows of `also`


# --- checks ---------------------------------------------------------------------------------------


def _in_flight(user_id: str) -> Exists:
    """SQL: a run of the user's is queued or processing."""
    return exists().where(col(Run.owner_id) == user_id, col(Run.status).in_(IN_FLIGHT))


@read_only
def check_deletable(db: Session, user_id: str) -> None:
    """Can the account be deleted now? UserGone (unknown or already deleted) or AccountBusy (a run
    in flight) if not: a clear answer before any password check. The batch checks it again."""
    user = db.get(User, user_id) if is_id(user_id) else None
    busy = user is not None and db.exec(select(_in_flight(user_id))).one()
    end_read(db)
    if user is None or user.deleted_at is not None:
        raise UserGone(user_id, user.deleted_at if user else None)
    if busy:
        raise AccountBusy()


@read_only
def deleted_at(db: Session, user_id: str) -> datetime | None:
    """When the user was deleted (None: not deleted, or no such user)."""
    if not is_id(user_id):
        return None
    found = db.exec(select(User.deleted_at).where(User.id == user_id)).first()
    end_read(db)
    return found


# --- the rows -------------------------------------------------------------------------------------


def removing(user_id: str) -> dict[str, Any]:
    """SQL counts of what a deletion of the user removes, valid in its batch after the user row
    changed and before anything else did (the admin audit row's `before`)."""
    mine = select(Task.id).where(col(Task.owner_id) == user_id)

    def count(*where: Any, what: Any = None) -> Any:
        return select(func.count(what) if what is not None else func.count()).where(*where)

    runs = col(Run.owner_id) == user_id
    return {
        "tasks": count(col(Task.owner_id) == user_id, col(Task.deleted_at).is_(None))
        .select_from(Task)
        .scalar_subquery(),
        "sessions": count(col(UserSession.user_id) == user_id)
        .select_from(UserSession)
        .scalar_subquery(),
        "links": count(col(OneTimeLink.user_id) == user_id)
        .select_from(OneTimeLink)
        .scalar_subquery(),
        "inputs": count(col(TaskInput.task_id).in_(mine)).select_from(TaskInput).scalar_subquery(),
        "results": count(runs, what=col(Run.result_key)).scalar_subquery(),
        "posters": count(runs, what=col(Run.poster_key)).scalar_subquery(),
    }


def erase_rows(
    db: Session,
    user_id: str,
    password_hash: str | None = None,
    also: Callable[[ColumnElement[bool]], Executable] | None = None,
) -> ErasedRows:
    """The database part of a deletion, all or nothing (one batch). With `password_hash` (the
    one the owner's password was checked against) it applies only if the hash is still that one:
    a password changed meanwhile refuses it. Commits; the caller then removes the files.

    `also(erased)` builds one more statement of the batch, run right after the user row changed
    (`erased`: SQL, true once it did; `removing` counts what is about to go): the admin audit
    row. Its RETURNING rows come back in `also_rows`; should it fail, nothing is deleted.

    The user's live tasks are locked first, as `runs.start_run` does (task, then user: no
    deadlock), so a run started concurrently is either committed and seen as in flight here, or
    finds its task deleted."""
    if not is_id(user_id):
        raise UserGone(user_id)
    now = clock.now()
    marker = f"{UNUSABLE_PREFIX}{new_id()}"  # this deletion's own: the later statements test it
    erased = exists().where(col(User.id) == user_id, col(User.password_hash) == marker)
    mine = col(Task.owner_id) == user_id
    batch = Batch()
    batch.add(
        update(Task).where(mine, col(Task.deleted_at).is_(None)).values(updated_at=now)
    )  # the lock
    conditions = [col(User.id) == user_id, col(User.deleted_at).is_(None), ~_in_flight(user_id)]
    if password_hash is not None:
        conditions.append(col(User.password_hash) == password_hash)
    batch.add(
        update(User)
        .where(*conditions)
        .values(
            email=deleted_email(user_id),
            password_hash=marker,
            status=UserStatus.BLOCKED,
            deleted_at=now,
            signup_utm=null(),
            run_mails=False,
        )
        .returning(col(User.id)),
        "user",
    )
    if also is not None:
        batch.add(also(erased), "also")
    batch.add(
        delete(TaskInput)
        .where(col(TaskInput.task_id).in_(select(Task.id).where(mine)), erased)
        .returning(col(TaskInput.storage_key)),
        "inputs",
    )
    batch.add(
        select(Run.result_key, Run.poster_key).where(
            col(Run.owner_id) == user_id,
            erased,
            col(Run.result_key).is_not(None) | col(Run.poster_key).is_not(None),
        ),
        "results",
    )
    batch.add(
        update(Run)
        .where(col(Run.owner_id) == user_id, erased)
        .values(result_key=None, poster_key=None, inputs={})
    )
    batch.add(
        update(Task)
        .where(mine, col(Task.deleted_at).is_(None), erased)
        .values(deleted_at=now)
        .returning(col(Task.id)),
        "deleted_tasks",
    )
    batch.add(select(Task.id).where(mine, erased), "tasks")
    batch.add(
        delete(UserSession)
        .where(col(UserSession.user_id) == user_id, erased)
        .returning(col(UserSession.id)),
        "sessions",
    )
    batch.add(
        delete(OneTimeLink)
        .where(col(OneTimeLink.user_id) == user_id, erased)
        .returning(col(OneTimeLink.id)),
        "links",
    )
    results = run_batch(db, batch.statements)
    if not batch.rows(results, "user"):
        db.rollback()
        _refusal(db, user_id, password_hash)
    keys = [r["storage_key"] for r in batch.rows(results, "inputs")]
    for r in batch.rows(results, "results"):
        keys += [k for k in (r["result_key"], r["poster_key"]) if k]
    changes.touch(db, user_id)  # their open pages find the session gone at once
    db.commit()
    db.expire_all()  # the ORM's copies of these rows are stale (Core statements)
    log.info("user %s deleted: %d keys to remove", user_id, len(keys))
    return ErasedRows(
        user_id=user_id,
        deleted_at=now,
        tasks_deleted=len(batch.rows(results, "deleted_tasks")),
        sessions=len(batch.rows(results, "sessions")),
        links=len(batch.rows(results, "links")),
        keys=keys,
        task_ids=[r["id"] for r in batch.rows(results, "tasks")],
        also_rows=batch.rows(results, "also") if also is not None else [],
    )


def _refusal(db: Session, user_id: str, password_hash: str | None) -> None:
    """Why the batch changed nothing (it was rolled back): raise that."""
    user = db.get(User, user_id, populate_existing=True)
    busy = user is not None and db.exec(select(_in_flight(user_id))).one()
    db.rollback()
    if user is None or user.deleted_at is not None:
        raise UserGone(user_id, user.deleted_at if user else None)
    if password_hash is not None and user.password_hash != password_hash:
        # Changed meanwhile (another tab, a reset link): the password given is not the current one.
        raise AccountError("wrong_password", account.WRONG_PASSWORD)
    if busy:
        raise AccountBusy()
    raise AccountError("not_deleted", "The account could not be deleted. Try again.")


# --- the files ------------------------------------------------------------------------------------


def task_folders(task_ids: list[str]) -> list[str]:
    """Where the files of these tasks are stored (see tasks.storage_key and the worker's
    result keys): every key under them is the user's."""
    return [f"{kind}/{task_id}" for task_id in task_ids for kind in ("inputs", "results")]


def purge_files(rows: ErasedRows) -> tuple[int, int]:
    """Remove the recorded keys, then sweep the user's task folders for anything left. Returns
    (removed, failed); each failure is logged as an error (blocking: a worker thread)."""
    keys = list(dict.fromkeys(rows.keys))
    removed = uploads.purge(keys)
    failed = len(keys) - removed
    storage = get_storage()
    for folder in task_folders(rows.task_ids):
        try:
            left = list(storage.list_keys(folder))
        except Exception:  # logged; the next folder is still swept
            log.exception("could not list %s in storage", folder)
            failed += 1
            continue
        if left:
            gone = uploads.purge(left)
            removed, failed = removed + gone, failed + len(left) - gone
    if failed:
        log.error("user %s deleted: %d files could not be removed", rows.user_id, failed)
    return removed, failed


def _erasure(rows: ErasedRows) -> Erasure:
    removed, failed = purge_files(rows)
    return Erasure(
        user_id=rows.user_id,
        deleted_at=rows.deleted_at,
        tasks_deleted=rows.tasks_deleted,
        sessions=rows.sessions,
        links=rows.links,
        files_removed=removed,
        files_failed=failed,
        also_rows=rows.also_rows,
    )


# --- the two ways in ------------------------------------------------------------------------------


def delete_account(user_id: str, password: str) -> Erasure:
    """The owner deletes their account with their current password (blocking: a worker thread).
    The password is checked as the account page checks it (`account.check_current_password`:
    wrong guesses count as failed logins, under the same limit; bcrypt with no transaction open):
    AccountError `wrong_password`, `rate_limited` or `gone`. AccountBusy while a run is in
    flight, UserGone if there is no such (live) account."""
    with_db(check_deletable, user_id)
    user = with_db(account.check_current_password, user_id, password or "")
    return _erasure(with_db(erase_rows, user_id, user.password_hash))


def delete_user(
    user_id: str, also: Callable[[ColumnElement[bool]], Executable] | None = None
) -> Erasure:
    """The operator deletes a user (admin API, CLI): the same deletion, no password. UserGone for
    an unknown or already deleted user, AccountBusy while a run is in flight (blocking). `also`:
    one more statement of the deletion's batch (see `erase_rows`), the admin API's audit row."""
    with_db(check_deletable, user_id)
    return _erasure(with_db(erase_rows, user_id, also=also))
