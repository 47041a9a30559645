"""Export my data (SPEC §9): one ZIP, streamed, never built in memory or on disk.

Entries, in this order:
- `account.json`: the account (address, status, balance, dates, settings, sign-up utm), its
  sessions (device, IP, country, dates) and its checkouts (payments);
- `ledger.csv`: every balance change and refused attempt, oldest first (read page by page);
- the stored files of every task not deleted: `files/<task>/<slot>-<filename>` for the inputs,
  `files/<task>/result-attempt-<n>.mp4` and `files/<task>/poster-attempt-<n>.jpg` for the runs
  (`<task>` is the task's name made safe for a path, or its id: unique within the archive);
- `tasks.json`: the tasks, their inputs and runs (status, price, dates, the reason of a failure
  as the user is shown it), each file with its path in the archive; written last, so that a file
  storage could not read is marked `"missing": true` instead of breaking the archive.

Media are stored as they are (ZIP_STORED: already compressed), JSON and CSV deflated; every entry
is ZIP64 so that any size fits without seeking back. `zipfile` writes into a small sink that the
generator empties after each chunk: memory stays at about one storage chunk (1 MiB) whatever the
size of the files (bench/export_memory.py).

`collect` reads the database (UserGone for an unknown or deleted user: the route answers 404
before sending a byte); `zip_chunks` is the blocking generator of the archive's bytes (storage
reads: iterate it in a worker thread); `stream_zip(user_id)` is both at once.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.adapters.storage import get_storage
from vgen_app.db import end_read, read_only, with_db
from vgen_app.models import (
    CheckoutSession,
    LedgerEntry,
    Run,
    Task,
    TaskInput,
    User,
    UserSession,
    is_id,
)
from vgen_app.services.erasure import UserGone
from vgen_app.services.runs import plain_reason

LEDGER_PAGE = 1000
LEDGER_COLUMNS = (
    "id", "created_at", "action", "diff", "old_balance", "new_balance", "outcome", "reference",
    "note",
)  # fmt: skip
FOLDER_MAX = 80  # characters of a task's folder name
NAME_MAX = 120  # characters of a file's name in its folder


@dataclass
class ExportFile:
    """A stored file and where it goes in the archive; `record` is its entry in tasks.json, told
    whether it made it."""

    path: str
    key: str
    record: dict[str, Any]
    when: datetime


@dataclass
class ExportData:
    user_id: str
    account: dict[str, Any]
    tasks: list[dict[str, Any]]
    files: list[ExportFile] = field(default_factory=list)
    exported_at: datetime = field(default_factory=clock.now)


# --- reading --------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def safe_part(name: str, fallback: str, most: int) -> str:
    """A name usable as one path segment on any system: NFC, no control or format characters,
    no separators or characters Windows refuses, no leading or trailing dots or spaces."""
    name = unicodedata.normalize("NFC", name or "")
    name = "".join(
        "_" if ch in '/\\:*?"<>|' or unicodedata.category(ch).startswith("C") else ch for ch in name
    )
    name = " ".join(name.split()).strip(" .")
    if len(name) > most:
        stem, dot, ext = name.rpartition(".")
        ext = ext[:16] if dot and stem else ""
        name = (name[: most - len(ext) - 1] + "." + ext) if ext else name[:most]
        name = name.strip(" .")
    return name or fallback


@read_only
def collect(db: Session, user_id: str) -> ExportData:
    """What the archive holds, but the ledger (read page by page while it streams) and the files'
    bytes. UserGone for an unknown or deleted user."""
    user = db.get(User, user_id) if is_id(user_id) else None
    if user is None or user.deleted_at is not None:
        end_read(db)
        raise UserGone(user_id, user.deleted_at if user else None)
    sessions = db.exec(
        select(UserSession).where(UserSession.user_id == user_id).order_by(col(UserSession.id))
    ).all()
    checkouts = db.exec(
        select(CheckoutSession)
        .where(CheckoutSession.user_id == user_id)
        .order_by(col(CheckoutSession.created_at))
    ).all()
    task_rows = db.exec(
        select(Task)
        .where(Task.owner_id == user_id, col(Task.deleted_at).is_(None))
        .order_by(col(Task.created_at), col(Task.id))
    ).all()
    ids = [t.id for t in task_rows]
    inputs: dict[str, list[TaskInput]] = {}
    runs: dict[str, list[Run]] = {}
    if ids:
        for row in db.exec(
            select(TaskInput).where(col(TaskInput.task_id).in_(ids)).order_by(col(TaskInput.slot))
        ):
            inputs.setdefault(row.task_id, []).append(row)
        for run in db.exec(
            select(Run)
            .where(col(Run.task_id).in_(ids), Run.owner_id == user_id)
            .order_by(col(Run.attempt))
        ):
            runs.setdefault(run.task_id, []).append(run)
    end_read(db)

    account = {
        "id": user.id,
        "email": user.email,
        "status": str(user.status),
        "created_at": _iso(user.created_at),
        "balance": int(user.balance),
        "run_mails": bool(user.run_mails),
        "signup_utm": user.signup_utm,
        "sessions": [
            {
                "created_at": _iso(s.created_at),
                "last_seen_at": _iso(s.last_seen_at),
                "expires_at": _iso(s.expires_at),
                "revoked_at": _iso(s.revoked_at),
                "ip": s.ip,
                "user_agent": s.user_agent,
                "country": s.country,
            }
            for s in sessions
        ],
        "payments": [
            {
                "checkout": c.id,
                "provider": c.provider,
                "package": c.package_id,
                "tokens": int(c.tokens),
                "amount_cents": c.amount_cents,
                "currency": c.currency,
                "status": str(c.status),
                "created_at": _iso(c.created_at),
                "paid_at": _iso(c.paid_at),
            }
            for c in checkouts
        ],
    }
    data = ExportData(user_id, account, [])
    folders: set[str] = set()
    for task in task_rows:
        folder = safe_part(task.name, task.id, FOLDER_MAX)
        if folder.casefold() in folders:
            folder = f"{folder[: FOLDER_MAX - len(task.id) - 1]}-{task.id}"
        folders.add(folder.casefold())
        entry: dict[str, Any] = {
            "id": task.id,
            "name": task.name,
            "model": task.model,
            "created_at": _iso(task.created_at),
            "updated_at": _iso(task.updated_at),
            "inputs": [],
            "runs": [],
        }
        for row in inputs.get(task.id, []):
            record: dict[str, Any] = {
                "slot": row.slot,
                "filename": row.filename,
                "size_bytes": int(row.size_bytes),
                "media": row.media,
                "created_at": _iso(row.created_at),
            }
            name = safe_part(f"{row.slot}-{row.filename}", row.slot, NAME_MAX)
            data.files.append(
                ExportFile(f"files/{folder}/{name}", row.storage_key, record, row.created_at)
            )
            entry["inputs"].append(record)
        for run in runs.get(task.id, []):
            record = {
                "id": run.id,
                "attempt": run.attempt,
                "status": str(run.status),
                "model": run.model,
                "price": int(run.price),
                "progress": run.progress,
                "error": plain_reason(run.error) if run.error else None,
                "inputs": {
                    slot: {k: v for k, v in (given or {}).items() if k != "storage_key"}
                    for slot, given in (run.inputs or {}).items()
                },
                "created_at": _iso(run.created_at),
                "submitted_at": _iso(run.submitted_at),
                "finished_at": _iso(run.finished_at),
                "refunded_at": _iso(run.refunded_at),
                "result_bytes": run.result_bytes,
            }
            when = run.finished_at or run.created_at
            for kind, key, ext in (
                ("result", run.result_key, "mp4"),
                ("poster", run.poster_key, "jpg"),
            ):
                if key:
                    file = {"kind": kind}
                    path = f"files/{folder}/{kind}-attempt-{run.attempt}.{ext}"
                    data.files.append(ExportFile(path, key, file, when))
                    record[kind] = file
            entry["runs"].append(record)
        data.tasks.append(entry)
    return data


@read_only
def ledger_page(db: Session, user_id: str, after_id: int, limit: int = LEDGER_PAGE) -> list[tuple]:
    """The user's ledger rows after `after_id`, oldest first, as CSV rows (id first)."""
    rows = db.exec(
        select(LedgerEntry)
        .where(LedgerEntry.user_id == user_id, col(LedgerEntry.id) > after_id)
        .order_by(col(LedgerEntry.id))
        .limit(limit)
    ).all()
    end_read(db)
    return [
        (
            e.id,
            _iso(e.created_at),
            str(e.action),
            e.diff,
            e.old_balance,
            e.new_balance,
            str(e.outcome),
            e.reference or "",
            e.note or "",
        )
        for e in rows
    ]


# --- writing --------------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """Where zipfile writes: bytes kept until the generator takes them. It tells its position but
    cannot seek, so zipfile streams (data descriptors after each entry, never a seek back)."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self._pos = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._pos += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._pos

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _info(path: str, when: datetime, compress: int) -> zipfile.ZipInfo:
    """An entry named `path`, dated `when` (UTC: a ZIP stores no zone)."""
    stamp = tuple(when.astimezone(UTC).timetuple()[:6])
    info = zipfile.ZipInfo(path, date_time=max(stamp, (1980, 1, 1, 0, 0, 0)))
    info.compress_type = compress
    info.external_attr = 0o644 << 16  # -rw-r--r-- once unzipped
    return info


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8")


def zip_chunks(data: ExportData, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """The archive's bytes, a chunk at a time (blocking: iterate it in a worker thread)."""
    return (chunk for chunk in _archive(data, chunk_size) if chunk)


def _archive(data: ExportData, chunk_size: int) -> Iterator[bytes]:
    sink = _Sink()
    storage = get_storage()
    now = data.exported_at
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        account = {**data.account, "exported_at": _iso(now)}
        zf.writestr(_info("account.json", now, zipfile.ZIP_DEFLATED), _json(account))
        yield sink.take()

        with zf.open(_info("ledger.csv", now, zipfile.ZIP_DEFLATED), "w", force_zip64=True) as out:
            text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
            writer = csv.writer(text)
            writer.writerow(LEDGER_COLUMNS)
            after = 0
            while page := with_db(ledger_page, data.user_id, after):
                writer.writerows(page)
                after = page[-1][0]
                yield sink.take()
            text.detach()  # the entry is closed by its own `with`
        yield sink.take()

        for file in data.files:
            chunks = storage.iter_chunks(file.key, chunk_size)
            try:
                first = next(chunks, b"")
            except FileNotFoundError:
                file.record["missing"] = True
                continue
            try:
                info = _info(file.path, file.when, zipfile.ZIP_STORED)
                with zf.open(info, "w", force_zip64=True) as out:
                    size = len(first)
                    out.write(first)
                    yield sink.take()
                    for chunk in chunks:
                        out.write(chunk)
                        size += len(chunk)
                        yield sink.take()
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            file.record["file"] = file.path
            file.record["size_bytes"] = size
        zf.writestr(_info("tasks.json", now, zipfile.ZIP_DEFLATED), _json(data.tasks))
    yield sink.take()


def stream_zip(user_id: str) -> Iterator[bytes]:
    """The user's archive: the database read at once (UserGone before any byte), the bytes as the
    returned iterator is consumed (blocking: a worker thread)."""
    return zip_chunks(with_db(collect, user_id))


def filename(day: datetime | None = None) -> str:
    """The download's name: vgen-export-<date>.zip (UTC)."""
    return f"vgen-export-{(day or clock.now()):%Y-%m-%d}.zip"
