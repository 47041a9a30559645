"""Tasks and uploads: ownership, slots probed as real media, refusals that leave nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import Session, select

from tests.helpers import ingest, make_user
from vgen_app import catalog
from vgen_app.adapters.storage import get_storage
from vgen_app.config import get_settings
from vgen_app.models import TaskInput
from vgen_app.services import runs, tasks
from vgen_app.services.tasks import NotFound, TaskError

pytestmark = pytest.mark.usefixtures("local_storage")


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- tasks ---------------------------------------------------------------------------------------


def test_catalog_is_configuration() -> None:
    ids = [m.id for m in catalog.models()]
    assert ids == ["lipsync", "faceswap", "talking-photo"]
    lipsync = catalog.get("lipsync")
    assert [(s.name, s.kind) for s in lipsync.slots] == [("video", "video"), ("audio", "audio")]
    assert lipsync.price_for(0.4) == lipsync.min_price
    assert lipsync.price_for(10.2) == 11 * lipsync.price_per_second


def test_create_list_and_ownership(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    bob = make_user(db, "bob@example.com")
    first = tasks.create_task(db, ann, "lipsync", "  First  ")
    second = tasks.create_task(db, ann, "faceswap")
    tasks.create_task(db, bob, "talking-photo")
    assert first.name == "First" and second.name.startswith("Face swap")
    page = tasks.list_tasks(db, ann)
    assert page.total == 2 and page.rows[0].task.id in {first.id, second.id}
    assert {r.task.id for r in page.rows} == {first.id, second.id}
    assert all(r.last_status is None for r in page.rows)
    with pytest.raises(NotFound):
        tasks.get_task(db, bob, first.id)
    with pytest.raises(TaskError):
        tasks.create_task(db, ann, "deepfake-9000")


def test_list_is_paginated_newest_first(db: Session) -> None:
    from datetime import timedelta

    from vgen_app import clock

    ann = make_user(db, "ann@example.com")
    made = []
    for i in range(5):
        made.append(tasks.create_task(db, ann, "lipsync", f"t{i}").id)
        clock.travel(timedelta(seconds=1))
    page1 = tasks.list_tasks(db, ann, page=1, per_page=2)
    assert (page1.total, page1.pages) == (5, 3)
    assert [r.task.name for r in page1.rows] == ["t4", "t3"]
    assert [r.task.name for r in tasks.list_tasks(db, ann, 3, 2).rows] == ["t0"]


# --- uploads -------------------------------------------------------------------------------------


def test_upload_is_probed_stored_and_replaced(db: Session, samples, local_storage: Path) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    row = ingest(ann, task.id, "video", samples["video"])
    assert row.media["kind"] == "video" and abs(row.media["duration_s"] - 2) < 0.2
    assert row.filename == "clip.mp4" and row.size_bytes == samples["video"].stat().st_size
    assert get_storage().exists(row.storage_key)
    assert not list(get_settings().upload_tmp_dir.glob("*"))  # spool removed
    # Replacing: the old file is deleted, one row per slot.
    again = ingest(ann, task.id, "video", samples["long_video"])
    assert not get_storage().exists(row.storage_key) and get_storage().exists(again.storage_key)
    assert len(db.exec(select(TaskInput)).all()) == 1
    assert len(stored_files(local_storage)) == 1


@pytest.mark.parametrize(
    ("content", "filename", "code"),
    [
        (b"", "empty.mp4", "empty"),
        (b"hello, this is not a video at all\n" * 50, "notes.mp4", "not_media"),
        (b"\x7fELF\x02\x01\x01" + b"\x00" * 4000, "setup.mp4", "not_media"),
        (b"#!/bin/sh\nrm -rf /\n" * 100, "run.mp4", "not_media"),
    ],
)
def test_bad_files_are_refused_and_leave_nothing(
    db: Session, tmp_path: Path, local_storage: Path, content: bytes, filename: str, code: str
) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    src = tmp_path / filename
    src.write_bytes(content)
    with pytest.raises(TaskError) as err:
        ingest(ann, task.id, "video", src)
    assert err.value.code == code and err.value.message
    assert db.exec(select(TaskInput)).all() == []
    assert stored_files(local_storage) == []
    assert not list(get_settings().upload_tmp_dir.glob("*"))


def test_truncated_video_is_refused(
    db: Session, samples, tmp_path: Path, local_storage: Path
) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    data = samples["long_video"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(TaskError):
        ingest(ann, task.id, "video", cut)
    assert stored_files(local_storage) == [] and db.exec(select(TaskInput)).all() == []


def test_wrong_kind_and_format_get_clear_messages(
    db: Session, samples, local_storage: Path
) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    with pytest.raises(TaskError) as err:
        ingest(ann, task.id, "video", samples["audio"], filename="voice.mp4")  # audio named .mp4
    assert err.value.code == "kind" and "must be a video" in err.value.message
    with pytest.raises(TaskError) as err:
        ingest(ann, task.id, "audio", samples["image"])  # .png in an audio slot
    assert err.value.code == "format" and "mp3" in err.value.message
    with pytest.raises(TaskError) as err:
        ingest(ann, task.id, "nonsense", samples["video"])
    assert err.value.code == "unknown_slot"
    assert stored_files(local_storage) == []


def test_too_long_media_is_refused(db: Session, samples, monkeypatch: pytest.MonkeyPatch) -> None:
    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    slot = catalog.get("lipsync").get_slot("video")
    monkeypatch.setattr(slot, "max_seconds", 3)
    with pytest.raises(TaskError) as err:
        ingest(ann, task.id, "video", samples["long_video"])
    assert err.value.code == "too_long" and "limit is 3 s" in err.value.message


def test_upload_into_another_users_task_is_not_found(db: Session, samples, local_storage) -> None:
    ann = make_user(db, "ann@example.com")
    eve = make_user(db, "eve@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    with pytest.raises(NotFound):
        ingest(eve, task.id, "video", samples["video"])
    assert stored_files(local_storage) == []


class FakeChunks:
    """What `rx.UploadChunkIterator` yields: chunks of one file; counts how many were consumed."""

    def __init__(self, filename: str, chunks: int, size: int) -> None:
        self.filename, self.left, self.size, self.consumed = filename, chunks, size, 0

    def __aiter__(self):
        return self

    async def __anext__(self):
        from reflex_components_core.core._upload import UploadChunk

        if self.left == 0:
            raise StopAsyncIteration
        self.left -= 1
        self.consumed += 1
        return UploadChunk(
            filename=self.filename, offset=0, content_type="video/mp4", data=b"\0" * self.size
        )


def test_streamed_upload_over_the_limit_stops_early(
    db: Session, local_storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vgen_app.services.uploads import spool_and_ingest

    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    slot = catalog.get("lipsync").get_slot("video").model_copy(update={"max_mb": 1})
    chunks = FakeChunks("big.mp4", chunks=1000, size=64 * 1024)  # would be 64 MB
    error = asyncio.run(spool_and_ingest(chunks, ann, task.id, slot))
    assert error == "The file is larger than 1 MB."
    assert chunks.consumed == 17  # stopped right after crossing 1 MB, not after 64 MB
    assert not list(get_settings().upload_tmp_dir.glob("*"))
    assert stored_files(local_storage) == [] and db.exec(select(TaskInput)).all() == []


class StalledChunks(FakeChunks):
    """A few chunks, then the client stops sending (a cancelled upload waits here)."""

    async def __anext__(self):
        if self.left == 0:
            await asyncio.sleep(3600)
        return await super().__anext__()


def test_a_cancelled_upload_leaves_no_spool_file(
    db: Session, local_storage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reflex cancels the handler when the browser aborts the upload ("Cancel upload")."""
    from vgen_app.services.uploads import spool_and_ingest

    ann = make_user(db, "ann@example.com")
    task = tasks.create_task(db, ann, "lipsync")
    slot = catalog.get("lipsync").get_slot("video")
    chunks = StalledChunks("clip.mp4", chunks=3, size=64 * 1024)
    spool = get_settings().upload_tmp_dir

    async def cancel_midway() -> None:
        job = asyncio.ensure_future(spool_and_ingest(chunks, ann, task.id, slot))
        while chunks.consumed < 3 or not list(spool.glob("*")):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(cancel_midway())
    assert not list(spool.glob("*"))
    assert stored_files(local_storage) == [] and db.exec(select(TaskInput)).all() == []


@pytest.mark.parametrize("bad", ["a\x00b", "x" * 33, "", "../etc", "id with spaces", "é"])
def test_ids_that_are_not_ours_are_not_found_before_the_database(db: Session, bad: str) -> None:
    ann = make_user(db, "ann@example.com")
    with pytest.raises(tasks.NotFound):
        tasks.get_task(db, ann, bad)
    with pytest.raises(tasks.NotFound):
        tasks.task_view(db, ann, bad)
    with pytest.raises(tasks.NotFound):
        runs.result_of(db, ann, bad)
