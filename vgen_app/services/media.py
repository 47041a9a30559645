"""What the owner-only media route serves: a task's stored inputs, its runs' results and their
poster frames, found for their owner only (anyone else, and a deleted task: NotFound), and the
byte range a `Range` header asks for (RFC 9110 §14)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import PurePosixPath

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from vgen_app import catalog
from vgen_app.db import end_read, read_only
from vgen_app.models import Run, RunStatus, Task, TaskInput, is_id
from vgen_app.services import sessions
from vgen_app.services.errors import NotFound
from vgen_app.services.sessions import SessionUser


class Kind(StrEnum):
    INPUT = "input"
    RESULT = "result"
    POSTER = "poster"


# A stored file's type from its key's extension (the upload rules allow only these), per kind of
# slot: a `.webm` in an audio slot is audio/webm. Anything else is served as bytes, never sniffed.
_TYPES = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
}


def content_type(key: str, kind: str = "") -> str:
    ext = PurePosixPath(key).suffix.lower().lstrip(".")
    if ext == "webm" and kind == "audio":
        return "audio/webm"
    return _TYPES.get(ext, "application/octet-stream")


@dataclass(frozen=True)
class Media:
    key: str
    content_type: str

    @property
    def etag(self) -> str:
        # Every stored object has a key of its own (a replaced input or a re-saved result gets a
        # new one), so the key names the bytes.
        return '"' + hashlib.sha256(self.key.encode()).hexdigest()[:20] + '"'


# An input's id as we write it (no sign, no leading zero, ASCII digits only: one spelling per
# input), within the 32-bit column PostgreSQL gives it.
_INPUT_ID = re.compile(r"[1-9][0-9]{0,9}")
_MAX_INPUT_ID = 2**31 - 1


_INPUT_OF = (
    select(TaskInput.storage_key, TaskInput.slot, Task.model)
    .join(Task, col(Task.id) == TaskInput.task_id)
    .where(
        col(TaskInput.id) == bindparam("ref"),
        col(Task.owner_id) == bindparam("owner"),
        col(Task.deleted_at).is_(None),
    )
)
_RESULT_OF = (
    select(Run.result_key, Run.poster_key)
    .join(Task, col(Task.id) == Run.task_id)
    .where(
        col(Run.id) == bindparam("ref"),
        col(Run.owner_id) == bindparam("owner"),
        col(Run.status) == RunStatus.SUCCEEDED,
        col(Task.deleted_at).is_(None),
    )
)


@read_only
def locate(db: Session, owner_id: str, kind: str, ref: str) -> Media:
    """The stored file `ref` of this kind, if `owner_id` owns it and its task is not deleted
    (one statement, built once: a player sends a Range request for every seek)."""
    if kind == Kind.INPUT and _INPUT_ID.fullmatch(ref) and int(ref) <= _MAX_INPUT_ID:
        row = db.connection().execute(_INPUT_OF, {"ref": int(ref), "owner": owner_id}).first()
        end_read(db)
        if row is None:
            raise NotFound()
        key, slot, model = row
        return Media(key, content_type(key, _slot_kind(model, slot)))
    if kind in (Kind.RESULT, Kind.POSTER) and is_id(ref):
        found = db.connection().execute(_RESULT_OF, {"ref": ref, "owner": owner_id}).first()
        end_read(db)
        key = (found[0] if kind == Kind.RESULT else found[1]) if found else None
        if not key:
            raise NotFound()
        return Media(key, content_type(key))
    raise NotFound()


@read_only
def locate_for_session(
    db: Session, token: str | None, kind: str, ref: str
) -> tuple[SessionUser | None, Media | None]:
    """The session check and `locate` in one database call (one thread hop per Range request):
    (None, None) without a live session, (user, None) when the user may not see it."""
    user = sessions.validate(db, token)
    if user is None:
        return None, None
    try:
        return user, locate(db, user.user_id, kind, ref)
    except NotFound:
        return user, None


def _slot_kind(model: str, slot: str) -> str:
    spec = catalog.get(model)
    found = [s.kind for s in spec.slots if s.name == slot] if spec else []
    return found[0] if found else ""


# --- Range -----------------------------------------------------------------------------------------


class Unsatisfiable(Exception):
    """The Range header asks for bytes the object does not have, or for several ranges, or is
    malformed: answered 416 with `Content-Range: bytes */<size>`."""


_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_MAX_RANGE_HEADER = 200


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte a Range header asks for, or None for the whole object.

    One range only (`bytes=a-b`, `bytes=a-`, `bytes=-n`); a range unit other than bytes is ignored
    (RFC 9110: the whole object); several ranges, a malformed one, or one past the end are
    Unsatisfiable."""
    if header is None or not header.strip():
        return None
    value = header.strip()
    unit = value.split("=", 1)[0].strip().lower()
    if unit != "bytes":
        return None
    match = _RANGE.fullmatch(value.replace(" ", "").lower())
    if match is None or len(value) > _MAX_RANGE_HEADER:
        raise Unsatisfiable(header)
    first, last = match.groups()
    if first == "" and last == "":
        raise Unsatisfiable(header)
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable(header)
        return max(0, size - n), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise Unsatisfiable(header)
    return start, end
