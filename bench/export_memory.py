"""Export memory bench (issue M): a user's "Export my data" ZIP of ~1 GiB of stored files, streamed,
and the peak RSS growth while it streams. Loopback only, bounded, everything in a temp folder.

What is measured:
  * DATA: --gib GiB (default 1) of stored files in --files (8) inputs of as many tasks, random bytes
    (one 16 MiB os.urandom block, each 16 MiB written with its own counter in front, so no two blocks
    are alike), written straight into a temporary LocalStorage root (STORAGE_URL=file://...) under
    `inputs/<task>/video/<n>.mp4`; a temp SQLite database migrated as the other benches do; the user
    made through the services (tests/helpers.py), its TaskInput rows inserted directly. A second
    user with one 1 MiB file is the warm-up.
  * SERVICE: `services/export.stream_zip(user)` in this process, the chunks counted and dropped as
    they come. RSS: VmRSS every 5 ms and the kernel's VmHWM (reset through /proc/self/clear_refs),
    from after a warm-up export (imports, database connections, allocator arenas made).
  * HTTP: the /api app (`vgen_app.api.app:create_api`, a factory) under granian, one worker, the user's
    own route `GET /api/account/export` with a `vgen_session` cookie; the client (httpx, in this
    process) reads the body in 1 MiB pieces and drops them (with --keep it writes them to a file and
    checks the archive with zipfile: every CRC). RSS of the granian worker, sampled the same way
    (VmRSS every 50 ms, VmHWM), from after a warm-up download of the small user.
  * Both: bytes out, MiB/s (wall), the number of chunks, peak RSS growth in MiB.

Target: peak RSS growth <= 50 MiB whatever --gib is (the archive is never in memory: about one
storage chunk, 1 MiB, at a time).

Usage: .venv/bin/python bench/export_memory.py [--gib 1] [--files 8] [--via service,http] [--keep]
       (about 30 s at 1 GiB; the data is written to the temp dir first and removed at the end)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Self

from common import ROOT, free_port, migrated, temp_sqlite_url, use_database
from upload_stream import children_of

MiB = 1024 * 1024
BLOCK = 16 * MiB
GRANIAN = Path(sys.executable).parent / "granian"


def vm_mb(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Peak:
    """VmRSS of `pid` every `period` s and VmHWM (reset on entry): the peak, and the growth."""

    def __init__(self, pid: int | str = "self", period: float = 0.005) -> None:
        self.pid, self.period = pid, period
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")
            self.hwm = True
        except OSError:
            self.hwm = False
        self.base = vm_mb(pid, "VmRSS")
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.peak = max(self.peak, vm_mb(self.pid, "VmRSS"))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_mb(self.pid, "VmRSS"))
        if self.hwm:
            self.peak = max(self.peak, vm_mb(self.pid, "VmHWM"))

    @property
    def growth(self) -> float:
        return self.peak - self.base


def make_user(email: str, root: Path, total: int, files: int) -> tuple[str, str]:
    """A user with `files` stored inputs of `total` bytes in all; (user id, session token)."""
    from tests.helpers import login_session
    from tests.helpers import make_user as signed_up
    from vgen_app.db import session_scope
    from vgen_app.models import TaskInput
    from vgen_app.services import tasks

    block = bytearray(os.urandom(BLOCK))
    counter = 0
    with session_scope() as db:
        uid = signed_up(db, email)
        each = total // files
        for n in range(files):
            task = tasks.create_task(db, uid, "lipsync", f"task {n}")
            key = f"inputs/{task.id}/video/{n}.mp4"
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                left = each
                while left > 0:
                    counter += 1
                    block[:8] = counter.to_bytes(8, "big")
                    out.write(block[: min(left, BLOCK)])
                    left -= BLOCK
            db.add(
                TaskInput(
                    task_id=task.id,
                    slot="video",
                    storage_key=key,
                    filename=f"clip {n}.mp4",
                    size_bytes=each,
                    media={"kind": "video"},
                )
            )
            db.commit()
        token = login_session(db, email)
    return uid, token


def via_service(uid: str, warm_uid: str) -> dict:
    from vgen_app.services import export

    for _ in export.stream_zip(warm_uid):
        pass
    sent = chunks = 0
    t0 = time.monotonic()
    with Peak() as peak:
        for chunk in export.stream_zip(uid):
            sent += len(chunk)
            chunks += 1
    return {"sent": sent, "chunks": chunks, "s": time.monotonic() - t0, "peak": peak}


def via_http(token: str, warm_token: str, env: dict[str, str], tmp: Path, keep: bool) -> dict:
    import httpx

    port = free_port()
    log = tmp / "granian.log"
    cmd = [str(GRANIAN), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1", "--log-level", "warning", "--factory", "vgen_app.api.app:create_api"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**env, "APP_URL": f"http://localhost:{port}"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api/account/export"
    host = {"Host": f"localhost:{port}"}  # APP_URL's host (127.0.0.1 would be redirected)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"granian exited:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", headers=host).status_code:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("granian did not answer in 60 s")
            time.sleep(0.2)
        kids = children_of(proc.pid)
        worker = max(kids, key=lambda p: vm_mb(p, "VmRSS")) if kids else proc.pid

        def download(cookie: str, dest: Path | None) -> tuple[int, int, int]:
            headers = {**host, "Cookie": f"vgen_session={cookie}"}
            sent = pieces = 0
            with httpx.stream("GET", url, headers=headers, timeout=120) as resp:
                assert resp.status_code == 200, resp.status_code
                assert resp.headers["content-type"] == "application/zip"
                fh = dest.open("wb") if dest else None
                try:
                    for piece in resp.iter_raw(MiB):
                        sent += len(piece)
                        pieces += 1
                        if fh:
                            fh.write(piece)
                finally:
                    if fh:
                        fh.close()
            return resp.status_code, sent, pieces

        download(warm_token, None)
        dest = tmp / "export.zip" if keep else None
        t0 = time.monotonic()
        with Peak(worker, period=0.05) as peak:
            _status, sent, pieces = download(token, dest)
        took = time.monotonic() - t0
        checked = None
        if dest:
            with zipfile.ZipFile(dest) as archive:
                checked = archive.testzip() is None and len(archive.namelist())
            dest.unlink()
        return {"sent": sent, "chunks": pieces, "s": took, "peak": peak, "checked": checked}
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--via", default="service,http")
    parser.add_argument("--keep", action="store_true", help="http: write the ZIP and check it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vgen-bench-export-"))
    root = tmp / "storage"
    url = migrated(temp_sqlite_url("export"))
    os.environ["STORAGE_URL"] = f"file://{root}"
    os.environ["UPLOAD_TMP_DIR"] = str(tmp / "spool")
    os.environ.setdefault("BCRYPT_ROUNDS", "4")
    use_database(url)
    try:
        total = int(args.gib * 1024**3)
        t0 = time.monotonic()
        uid, token = make_user("big@example.com", root, total, args.files)
        warm_uid, warm_token = make_user("warm@example.com", root, MiB, 1)
        print(
            f"data: {total / MiB:,.0f} MiB in {args.files} stored files, written in "
            f"{time.monotonic() - t0:.1f} s; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
        )
        worst = 0.0
        for via in args.via.split(","):
            if via == "service":
                r = via_service(uid, warm_uid)
            elif via == "http":
                r = via_http(token, warm_token, dict(os.environ), tmp, args.keep)
            else:
                raise SystemExit(f"unknown --via {via!r}")
            peak = r["peak"]
            worst = max(worst, peak.growth)
            extra = f", archive checked ({r['checked']} entries)" if r.get("checked") else ""
            print(
                f"{via:>7}: {r['sent'] / MiB:,.1f} MiB out in {r['chunks']} chunks, "
                f"{r['sent'] / MiB / r['s']:,.0f} MiB/s; RSS {peak.base:.1f} -> peak "
                f"{peak.peak:.1f} MiB: growth {peak.growth:.1f} MiB{extra}"
            )
        verdict = "yes" if worst <= 50 else "no"
        print(f"flat (peak growth <= 50 MiB for {total / MiB:,.0f} MiB of files): {verdict}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
