"""Issue M: export my data (services/export.py): one ZIP, streamed. It opens with zipfile and holds
account.json, ledger.csv, tasks.json and the stored files of every task not deleted, byte for
byte; it is produced as it is read (the first bytes before any file is read, chunks of about one
storage chunk); a file storage lost is marked missing; a deleted user has no export. The memory
figure streams ~1 GB of stored files (bench/export_memory.py makes the same figure at any size).
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from sqlmodel import Session, select

from tests.helpers import ingest, make_user
from tests.services.test_erasure import PW, build_account
from vgen_app import clock
from vgen_app.adapters.storage import get_storage
from vgen_app.models import Run, TaskInput
from vgen_app.services import erasure, export, ledger, tasks

pytestmark = pytest.mark.usefixtures("local_storage")


def _zip(chunks: Iterator[bytes]) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(b"".join(chunks)))
    assert archive.testzip() is None  # every entry's CRC checks
    return archive


def _stored(key: str) -> bytes:
    return b"".join(get_storage().iter_chunks(key))


def test_the_archive_holds_the_account_ledger_tasks_and_files(
    db: Session, samples, tmp_path: Path
) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    twin = tasks.create_task(db, ann.user_id, "lipsync", "My clip")  # the same name again
    ingest(ann.user_id, twin.id, "video", samples["video"], filename="a/b\\c\u202e.mp4")
    ledger.change_balance(db, ann.user_id, -100, "manual", note='a "quoted", note')
    ledger.change_balance(db, ann.user_id, -(10**9), "manual")  # refused: on record too
    other = build_account(db, samples, tmp_path / "sim-eve", "eve@example.com")

    archive = _zip(export.stream_zip(ann.user_id))

    run = db.get(Run, ann.run_id)
    inputs = {i.slot: i for i in db.exec(select(TaskInput).where(TaskInput.task_id == ann.task_id))}
    db.commit()
    names = archive.namelist()
    assert names[:2] == ["account.json", "ledger.csv"] and names[-1] == "tasks.json"
    assert sorted(names[2:-1]) == sorted(
        [
            f"files/My clip/audio-{inputs['audio'].filename}",
            f"files/My clip/video-{inputs['video'].filename}",
            "files/My clip/result-attempt-1.mp4",
            "files/My clip/poster-attempt-1.jpg",
            f"files/My clip-{twin.id}/video-c.mp4",  # the name as uploads kept it,
        ]
    )
    # Byte for byte what storage holds.
    assert archive.read("files/My clip/result-attempt-1.mp4") == _stored(run.result_key)
    assert archive.read("files/My clip/poster-attempt-1.jpg") == _stored(run.poster_key)
    for slot, row in inputs.items():
        assert archive.read(f"files/My clip/{slot}-{row.filename}") == _stored(row.storage_key)
    # Media stored as they are, text deflated; readable permissions once unzipped.
    kinds = {i.filename: i.compress_type for i in archive.infolist()}
    assert kinds["files/My clip/result-attempt-1.mp4"] == zipfile.ZIP_STORED
    assert kinds["tasks.json"] == kinds["ledger.csv"] == zipfile.ZIP_DEFLATED
    assert all(i.external_attr >> 16 == 0o644 for i in archive.infolist())

    account = json.loads(archive.read("account.json"))
    assert {k: account[k] for k in ("id", "email", "status", "balance")} == {
        "id": ann.user_id,
        "email": "ann@example.com",
        "status": "activated",
        "balance": ledger.balance_of(db, ann.user_id),
    }
    assert [p["status"] for p in account["payments"]] == ["paid"]
    assert len(account["sessions"]) == 1 and "token_hash" not in account["sessions"][0]

    rows = list(csv.DictReader(io.StringIO(archive.read("ledger.csv").decode())))
    assert [(r["action"], int(r["diff"]), r["outcome"]) for r in rows] == [
        ("topup", 10_000, "applied"),
        ("used", -int(run.price), "applied"),
        ("manual", -100, "applied"),
        ("manual", -(10**9), "rejected"),
    ]
    assert rows[2]["note"] == 'a "quoted", note'

    listed = json.loads(archive.read("tasks.json"))
    assert [t["id"] for t in listed] == [ann.task_id, twin.id]  # not the deleted one
    first = listed[0]
    assert [i["slot"] for i in first["inputs"]] == ["audio", "video"]
    assert all(i["file"] in names for i in first["inputs"])
    (run_out,) = first["runs"]
    assert (run_out["status"], run_out["attempt"], run_out["price"]) == ("succeeded", 1, run.price)
    assert run_out["result"]["file"] == "files/My clip/result-attempt-1.mp4"
    assert run_out["result"]["size_bytes"] == run.result_bytes
    assert "storage_key" not in json.dumps(listed)  # no internal keys
    assert not any(other.task_id in n for n in names)


def test_it_is_streamed_as_it_is_read(
    db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first bytes come before any stored file is read, and no chunk is bigger than about one
    storage chunk: the archive is never whole in memory."""
    uid = make_user(db, "ann@example.com", PW)
    task = tasks.create_task(db, uid, "lipsync", "big")
    payload = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "big.mp4"
    src.write_bytes(payload)
    store = get_storage()
    for slot in ("video", "audio"):
        key = f"inputs/{task.id}/{slot}/x.mp4"
        store.put_file(key, src)
        db.add(
            TaskInput(
                task_id=task.id,
                slot=slot,
                storage_key=key,
                filename=f"{slot}.mp4",
                size_bytes=len(payload),
                media={},
            )
        )
    db.commit()
    reads: list[str] = []
    real = store.iter_chunks

    def counted(key: str, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
        for chunk in real(key, chunk_size):
            reads.append(key)
            yield chunk

    monkeypatch.setattr(store, "iter_chunks", counted)
    chunks = export.stream_zip(uid)
    first = next(chunks)
    assert first.startswith(b"PK\x03\x04") and reads == []
    body = [first, *chunks]
    sizes = [len(chunk) for chunk in body]
    assert max(sizes) <= 64 * 1024 + 1024 * 1024  # a storage chunk and an entry header at most
    assert len(reads) == 2 * 4  # each file read once, 1 MiB at a time
    archive = _zip(iter(body))
    assert archive.read("files/big/video-video.mp4") == payload


def test_a_lost_file_is_marked_missing(db: Session, samples, tmp_path: Path) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    run = db.get(Run, ann.run_id)
    db.commit()
    get_storage().delete(run.poster_key)
    archive = _zip(export.stream_zip(ann.user_id))
    assert "files/My clip/poster-attempt-1.jpg" not in archive.namelist()
    (task,) = json.loads(archive.read("tasks.json"))
    assert task["runs"][0]["poster"] == {"kind": "poster", "missing": True}
    assert task["runs"][0]["result"]["file"] == "files/My clip/result-attempt-1.mp4"


def test_no_export_for_a_deleted_or_unknown_user(db: Session) -> None:
    uid = make_user(db, "ann@example.com", PW)
    empty = _zip(export.stream_zip(uid))
    assert empty.namelist() == ["account.json", "ledger.csv", "tasks.json"]
    assert json.loads(empty.read("tasks.json")) == []
    erasure.delete_user(uid)
    for who in (uid, "noSuchUser123", ""):
        with pytest.raises(erasure.UserGone):
            export.stream_zip(who)
    assert export.filename(clock.now()).startswith("vgen-export-20")


# --- the memory figure ----------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Peak:
    """The highest RSS of this process while it runs (sampled every 5 ms)."""

    def __init__(self) -> None:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def make_big_user(db: Session, root: Path, total: int, files: int = 8) -> str:
    """A user whose tasks hold `total` bytes of stored files (random bytes, `files` of them)."""
    uid = make_user(db, "big@example.com", PW)
    block = os.urandom(16 * 1024 * 1024)
    store = get_storage()
    each = total // files
    src = root / "blob.bin"
    for n in range(files):
        task = tasks.create_task(db, uid, "lipsync", f"task {n}")
        with src.open("wb") as out:
            left = each
            while left > 0:
                out.write(block[: min(left, len(block))])
                left -= len(block)
        key = f"inputs/{task.id}/video/{n}.mp4"
        store.put_file(key, src)
        db.add(
            TaskInput(
                task_id=task.id,
                slot="video",
                storage_key=key,
                filename=f"{n}.mp4",
                size_bytes=each,
                media={},
            )
        )
        db.commit()
    src.unlink()
    return uid


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_memory_stays_flat_while_a_gigabyte_streams(db: Session, tmp_path: Path, figure) -> None:
    total = 1024**3
    uid = make_big_user(db, tmp_path, total)
    before = _rss()
    sent, chunks = 0, 0
    with _Peak() as peak:
        for chunk in export.stream_zip(uid):
            sent += len(chunk)
            chunks += 1
    growth = peak.peak - before
    assert sent > total
    assert growth < 64 * 1024**2  # flat: a few storage chunks, never the files
    figure(
        f"ZIP of {total / 1024**3:.1f} GiB of stored files ({sent / 1024**2:,.0f} MiB in "
        f"{chunks} chunks): peak RSS growth {growth / 1024**2:.1f} MiB"
    )


# --- the CLI: vgen user export ----------------------------------------------------------------------


def test_cli_user_export(db: Session, samples, tmp_path: Path, capsys, monkeypatch) -> None:
    from vgen_app.cli import main

    ann = build_account(db, samples, tmp_path / "sim")
    dest = tmp_path / "out" / "ann.zip"
    dest.parent.mkdir()
    assert main(["user", "export", ann.email, "-o", str(dest)]) == 0
    assert f"exported user {ann.user_id} to {dest}" in capsys.readouterr().out
    by_id = tmp_path / "out" / "by-id.zip"
    assert main(["user", "export", ann.user_id, "--output", str(by_id)]) == 0
    for path in (dest, by_id):
        with zipfile.ZipFile(path) as archive:
            assert archive.testzip() is None
            assert "files/My clip/result-attempt-1.mp4" in archive.namelist()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["ann.zip", "by-id.zip"]  # no .part
    # Default name in the working directory.
    monkeypatch.chdir(tmp_path)
    assert main(["user", "export", ann.user_id]) == 0
    assert (tmp_path / export.filename()).is_file()
    assert main(["user", "export", "nobody@example.com", "-o", str(dest)]) == 1
    erasure.delete_user(ann.user_id)
    assert main(["user", "export", ann.user_id, "-o", str(tmp_path / "gone.zip")]) == 1
    assert "deleted" in capsys.readouterr().err
    assert not (tmp_path / "gone.zip").exists()


def test_new_ids_never_start_with_a_dash_so_the_cli_takes_them() -> None:
    """`vgen user export <id>`: an id starting with "-" would be read as an option (1 in 64)."""
    from vgen_app.models import is_id, new_id

    ids = [new_id() for _ in range(5_000)]
    assert all(is_id(i) and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
