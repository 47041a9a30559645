"""Taking an uploaded file into a task's slot: probe it as real media, check the slot's rules,
store it, record it — or refuse it with a clear message and leave nothing behind."""

from __future__ import annotations

import asyncio
import logging
import unicodedata
import uuid
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO, Protocol

from vgen_app.adapters import media
from vgen_app.adapters.storage import StorageError, get_storage
from vgen_app.catalog import Slot
from vgen_app.config import get_settings
from vgen_app.db import with_db
from vgen_app.models import TaskInput, is_id
from vgen_app.services import metrics, tasks
from vgen_app.services.tasks import TaskError

log = logging.getLogger("vgen.uploads")

MAX_FILENAME_CHARS = 255
# An upload that carried no file: the browser refused the drop (wrong type, several files) and
# already said why, or the stream was empty.
NO_FILE = "No file was received."
# The file could not be written (the spool's or local storage's disk full, the bucket refusing):
# refused like a bad file, nothing of it kept; the user may send it again later.
NOT_STORED = "The file could not be saved just now. Please try again in a few minutes."
# Task ids are `new_id()`s: anything else is "not found" before the database sees it (PostgreSQL
# refuses a NUL byte in a query parameter: the upload would crash instead of being refused).


def safe_filename(filename: str | None) -> str:
    """The name to show and record for an upload: the last path segment (either slash), NFC,
    without control or format characters (NUL, newlines, right-to-left overrides that disguise
    an extension), at most MAX_FILENAME_CHARS with its extension kept. Never a path: storage
    keys are made from ids, not from this."""
    name = unicodedata.normalize("NFC", filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C")).strip()
    if name.strip(". ") == "":
        name = ""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    if len(name) > MAX_FILENAME_CHARS:
        ext = ext[:16]
        keep = MAX_FILENAME_CHARS - (len(ext) + 1 if ext else 0)
        name = stem[:keep] + (f".{ext}" if ext else "")
    return name or "upload"


def ingest(
    owner_id: str, task_id: str, slot_name: str, filename: str, spooled: Path, size: int
) -> TaskInput:
    """Blocking (probe, storage): run in a worker thread. The spooled file is always removed."""
    storage = get_storage()
    key: str | None = None
    filename = safe_filename(filename)
    try:
        if not is_id(task_id):
            raise tasks.NotFound()
        _task, slot = with_db(tasks.upload_target, owner_id, task_id, slot_name)
        tasks.check_file(slot, filename, size if spooled.stat().st_size > 0 else 0)
        try:
            info = media.probe(spooled)
        except media.MediaError as exc:
            raise tasks.media_error(exc) from exc
        tasks.check_media(slot, info)
        key = tasks.storage_key(task_id, slot.name, filename)
        try:
            storage.put_file(key, spooled)
        except (OSError, StorageError) as exc:
            log.warning("upload into task %s not stored: %s", task_id, exc)
            raise TaskError("not_stored", NOT_STORED) from exc
        row, old_key = with_db(
            tasks.attach_input, owner_id, task_id, slot.name, key, filename, size, info
        )
        key = None  # recorded: keep it
        if old_key:
            try:
                storage.delete(old_key)
            except Exception:  # noqa: BLE001 - an orphan blob is harmless, a failed upload is not
                log.warning("could not delete replaced input %s", old_key)
        return row
    finally:
        if key is not None:  # stored but not recorded: remove it
            try:
                storage.delete(key)
            except Exception:  # noqa: BLE001
                log.warning("could not delete unrecorded upload %s", key)
        spooled.unlink(missing_ok=True)


class Chunk(Protocol):
    """A piece of an uploaded file as the web layer streams it (Reflex's `UploadChunk`)."""

    filename: str
    data: bytes


async def spool_and_ingest(
    chunks: AsyncIterable[Chunk], user_id: str, task_id: str, slot: Slot
) -> str:
    """Write a streamed upload to a spool file (off the event loop; never whole in memory; the
    size limit enforced while it streams), then `ingest` it. '' if accepted, else the message."""
    spool_dir = get_settings().upload_tmp_dir
    spooled = spool_dir / f"{uuid.uuid4().hex}.part"
    try:
        await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
        handle = await asyncio.to_thread(open, spooled, "wb")
    except OSError as exc:
        log.warning("upload not spooled: %s", exc)
        return NOT_STORED
    size, filename, error = 0, "", ""
    try:
        async for chunk in chunks:
            if filename and chunk.filename != filename:
                error = "Upload one file at a time."
                break
            filename = chunk.filename
            size += len(chunk.data)
            tasks.check_size(slot, size)
            await asyncio.to_thread(handle.write, chunk.data)
    except TaskError as exc:
        error = exc.message
    except OSError as exc:  # the spool's disk is full (or failing)
        log.warning("upload not spooled: %s", exc)
        error = NOT_STORED
    except asyncio.CancelledError:  # the upload was cancelled or its client went away
        await asyncio.to_thread(_close, handle)
        await asyncio.to_thread(spooled.unlink, True)
        raise
    finally:
        metrics.UPLOAD_BYTES.inc(size)
        if not await asyncio.to_thread(_close, handle):  # its last bytes did not fit
            error = error or NOT_STORED
    if error or not filename:
        await asyncio.to_thread(spooled.unlink, True)
        return error or NO_FILE
    try:
        await asyncio.to_thread(ingest, user_id, task_id, slot.name, filename, spooled, size)
    except TaskError as exc:
        return exc.message
    return ""


def _close(handle: BinaryIO) -> bool:
    """Close the spool file (again: harmless); False if its buffered bytes could not be written."""
    try:
        handle.close()
    except OSError as exc:
        log.warning("upload not spooled: %s", exc)
        return False
    return True


def purge(keys: list[str]) -> int:
    """Remove these files from storage (blocking: a worker thread), each tried twice; a file that
    cannot be removed is logged as an error for the operator. Returns how many are gone."""
    storage = get_storage()
    gone = 0
    for key in keys:
        for attempt in (1, 2):
            try:
                storage.delete(key)
                gone += 1
                break
            except Exception:  # logged; the next key is still removed
                if attempt == 2:
                    log.exception("could not delete %s from storage", key)
    return gone


def delete_task(owner_id: str, task_id: str) -> int:
    """Delete the owner's task and remove its files from storage (blocking: a worker thread).
    The rows change first (tasks.delete_task, one transaction); then the files go."""
    return purge(with_db(tasks.delete_task, owner_id, task_id))
