"""Large-upload bench: vgen's spool path vs a raw ASGI `request.stream()` floor (loopback only, bounded).

What is measured (be honest about it):
  * FLOOR (HTTP): a tiny Starlette app under uvicorn, in a subprocess on a free 127.0.0.1 port, whose POST
    handler writes `request.stream()` to a file. A chunked HTTP/1.1 POST of SIZE bytes (1 MiB writes) is sent
    with http.client; the server process's VmRSS is sampled every 50 ms.
  * FLOOR (in-process): the same raw loop (`async for chunk: f.write(chunk)`) in this process, no HTTP - the
    like-for-like baseline for the next line.
  * MEASURED (HTTP, main figure): a uvicorn subprocess whose POST handler is Reflex 0.10.1's own streaming-upload
    path minus the state/event dispatch: `_UploadChunkMultipartParser` over `request.stream()` pushing into an
    `UploadChunkIterator(maxsize=8)` (exactly what `_upload_chunk_file` does), consumed by
    `vgen_app.ui.tasks._spool_and_ingest` (ingest stubbed, see below). The client sends a multipart body with
    one "files" part. Not exercised: header/token checks and `app.event_processor.enqueue` (needs a live app).
  * MEASURED (in-process): `vgen_app.ui.tasks._spool_and_ingest` fed by an async iterator of 1 MiB chunks
    (objects with `.filename`/`.data`, like rx.UploadChunk); `services.uploads.ingest` is replaced by a stub
    that only unlinks the spool file (no ffprobe / DB / storage copy). This is NOT the Reflex `/_upload` HTTP
    endpoint: hitting that needs a live Reflex socket + state, which this bench does not set up.

Usage: .venv/bin/python bench/upload_stream.py [--mb 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHUNK = 1024 * 1024


def vmrss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    def __init__(self, pid: int, period: float = 0.05):
        self.pid, self.period = pid, period
        self.base = vmrss_mb(pid)
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, vmrss_mb(self.pid))
            except OSError:
                return
            self._stop.wait(self.period)

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, vmrss_mb(self.pid))

    @property
    def growth(self) -> float:
        return self.peak - self.base


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BLOCK = os.urandom(CHUNK)

FLOOR_APP = textwrap.dedent(
    """
    import os, sys
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    OUT = sys.argv[1]

    async def upload(request):
        n = 0
        with open(OUT, "wb") as fh:
            async for chunk in request.stream():
                fh.write(chunk)
                n += len(chunk)
        os.unlink(OUT)
        return JSONResponse({"bytes": n})

    async def ping(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/up", upload, methods=["POST"]), Route("/ping", ping)])

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
    """
)


REFLEX_PATH_APP = textwrap.dedent(
    """
    import asyncio, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    os.environ["UPLOAD_TMP_DIR"] = sys.argv[1]
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from reflex_components_core.core._upload import UploadChunkIterator, _UploadChunkMultipartParser
    from vgen_app.services import catalog, uploads
    from vgen_app.ui import tasks as ui_tasks

    GOT = {}

    def fake_ingest(user_id, task_id, slot_name, filename, spooled, size):
        GOT["size"] = size
        GOT["disk"] = Path(spooled).stat().st_size
        Path(spooled).unlink()

    uploads.ingest = fake_ingest
    SLOT = catalog.Slot(name="video", kind="video", label="Video", formats=["mp4"], max_mb=int(sys.argv[4]))

    async def upload(request):
        chunk_iter = UploadChunkIterator(maxsize=8)
        fut = None

        async def start(extra_args_raw):
            nonlocal fut
            fut = asyncio.ensure_future(ui_tasks._spool_and_ingest(chunk_iter, "u1", "t1", SLOT))
            chunk_iter.set_consumer_task(fut)

        parser = _UploadChunkMultipartParser(headers=request.headers, stream=request.stream(),
                                             chunk_iter=chunk_iter, on_args_ready=start)
        await parser.parse()
        await chunk_iter.finish()
        err = await fut
        return JSONResponse({"error": err, **GOT})

    async def ping(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/up", upload, methods=["POST"]), Route("/ping", ping)])

    if __name__ == "__main__":
        import uvicorn
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
    """
)


def run_http(total: int, workdir: Path, reflex_path: bool = False) -> dict:
    port = free_port()
    script = workdir / ("reflex_path_app.py" if reflex_path else "floor_app.py")
    script.write_text(REFLEX_PATH_APP if reflex_path else FLOOR_APP)
    if reflex_path:
        (workdir / "spool").mkdir(exist_ok=True)
        argv = [str(workdir / "spool"), str(port), str(ROOT), str(total // CHUNK + 16)]
    else:
        argv = [str(workdir / "floor.bin"), str(port)]
    proc = subprocess.Popen([sys.executable, str(script), *argv], cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                c.getresponse().read()
                c.close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("floor server did not start")
                time.sleep(0.1)
        time.sleep(0.3)  # let RSS settle

        boundary = "vgenbenchboundary7MA4YWxkTrZu0gW"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="big.mp4"\r\n'
            f"Content-Type: video/mp4\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body():
            if reflex_path:
                yield head
            sent = 0
            while sent < total:
                n = min(CHUNK, total - sent)
                yield BLOCK if n == CHUNK else BLOCK[:n]
                sent += n
            if reflex_path:
                yield tail

        ctype = (
            f"multipart/form-data; boundary={boundary}"
            if reflex_path
            else "application/octet-stream"
        )
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        with RssSampler(proc.pid) as rss:
            t0 = time.perf_counter()
            conn.request(
                "POST", "/up", body=body(), encode_chunked=True, headers={"Content-Type": ctype}
            )
            resp = conn.getresponse()
            payload = resp.read()
            dt = time.perf_counter() - t0
        conn.close()
        assert resp.status == 200, (resp.status, payload)
        if reflex_path:
            import json

            res = json.loads(payload)
            assert res.get("error") == "" and res.get("size") == total == res.get("disk"), res
        name = (
            "vgen: Reflex chunk parser -> _spool_and_ingest over HTTP (uvicorn)"
            if reflex_path
            else "floor: Starlette request.stream() over HTTP (uvicorn subprocess)"
        )
        return {
            "name": name,
            "secs": dt,
            "mbps": total / 1e6 / dt,
            "rss_base": rss.base,
            "rss_growth": rss.growth,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Chunk:
    filename: str
    data: bytes


async def chunk_iter(total: int, filename: str = "big.mp4"):
    sent = 0
    while sent < total:
        n = min(CHUNK, total - sent)
        # a fresh bytes object per chunk, like a real socket read
        yield Chunk(filename, bytes(BLOCK[:n]))
        sent += n
        await asyncio.sleep(0)


async def raw_inprocess(total: int, out: Path) -> None:
    with open(out, "wb") as fh:  # noqa: ASYNC230 - the floor is deliberately the plain loop
        async for c in chunk_iter(total):
            fh.write(c.data)
    out.unlink()


def run_inprocess_floor(total: int, workdir: Path) -> dict:
    with RssSampler(os.getpid()) as rss:
        t0 = time.perf_counter()
        asyncio.run(raw_inprocess(total, workdir / "raw.bin"))
        dt = time.perf_counter() - t0
    return {
        "name": "floor: raw async-for -> file.write, in-process",
        "secs": dt,
        "mbps": total / 1e6 / dt,
        "rss_base": rss.base,
        "rss_growth": rss.growth,
    }


def run_spool(total: int, workdir: Path) -> dict:
    os.environ["UPLOAD_TMP_DIR"] = str(workdir / "spool")
    from vgen_app import config
    from vgen_app.services import catalog, uploads
    from vgen_app.ui import tasks as ui_tasks

    if hasattr(config, "reset_settings"):
        config.reset_settings()
    got: dict = {}

    def fake_ingest(user_id, task_id, slot_name, filename, spooled, size):
        got["size"] = size
        got["disk"] = Path(spooled).stat().st_size
        Path(spooled).unlink()

    uploads.ingest = fake_ingest
    slot = catalog.Slot(
        name="video", kind="video", label="Video", formats=["mp4"], max_mb=total // CHUNK + 16
    )
    import gc

    gc.collect()
    time.sleep(0.3)
    with RssSampler(os.getpid()) as rss:
        t0 = time.perf_counter()
        err = asyncio.run(ui_tasks._spool_and_ingest(chunk_iter(total), "u1", "t1", slot))
        dt = time.perf_counter() - t0
    assert err == "", err
    assert got.get("size") == total == got.get("disk"), got
    return {
        "name": "vgen: ui.tasks._spool_and_ingest, in-process (ingest stubbed)",
        "secs": dt,
        "mbps": total / 1e6 / dt,
        "rss_base": rss.base,
        "rss_growth": rss.growth,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024, help="upload size in MiB (default 1024)")
    ap.add_argument(
        "--reps", type=int, default=3, help="rounds (variants interleaved; median MB/s, max RSS)"
    )
    args = ap.parse_args()
    total = args.mb * CHUNK
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < 3 * total:
        total = 512 * CHUNK
        print(f"low disk ({free / 1e9:.1f} GB free): using 512 MiB")
    workdir = Path(tempfile.mkdtemp(prefix="vgen-upload-bench-"))
    try:
        print(f"size: {total / CHUNK:.0f} MiB, chunk 1 MiB, tmp {workdir}")
        runners = [
            lambda: run_http(total, workdir),
            lambda: run_http(total, workdir, reflex_path=True),
            lambda: run_inprocess_floor(total, workdir),
            lambda: run_spool(total, workdir),
        ]
        results: list[list[dict]] = [[] for _ in runners]
        for rep in range(args.reps):
            # interleave and rotate the order so page-cache writeback hits every variant alike
            order = list(range(len(runners)))
            order = order[rep % len(order) :] + order[: rep % len(order)]
            for i in order:
                os.sync()
                time.sleep(0.5)
                r = runners[i]()
                results[i].append(r)
                print(
                    f"  rep {rep + 1} {r['name'][:60]:<60} {r['mbps']:8.1f} MB/s  "
                    f"RSS +{r['rss_growth']:.1f} MB"
                )
        rows = []
        for res in results:
            mbps = sorted(r["mbps"] for r in res)
            rows.append(
                {
                    **res[0],
                    "mbps": mbps[len(mbps) // 2],
                    "secs": total / 1e6 / mbps[len(mbps) // 2],
                    "rss_growth": max(r["rss_growth"] for r in res),
                    "rss_base": min(r["rss_base"] for r in res),
                }
            )
        print(f"summary over {args.reps} rounds: median MB/s (secs from it), max peak RSS growth")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    http_floor, http_vgen, inproc_floor, spool = rows
    for r in rows:
        print(
            f"{r['name']:<70} {r['secs']:7.2f} s {r['mbps']:8.1f} MB/s  "
            f"RSS base {r['rss_base']:6.1f} MB  peak growth {r['rss_growth']:6.1f} MB"
        )
    print(
        f"HTTP: vgen (Reflex parser + spool) / floor MB/s = {http_vgen['mbps'] / http_floor['mbps']:.2f}x"
        f"  (target >= 0.8x: {'OK' if http_vgen['mbps'] / http_floor['mbps'] >= 0.8 else 'UNDER'})"
    )
    print(
        f"HTTP: vgen server RSS growth = {http_vgen['rss_growth']:.1f} MB (target <= 50 MB: "
        f"{'OK' if http_vgen['rss_growth'] <= 50 else 'OVER'})"
    )
    print(
        f"in-process spool MB/s / HTTP floor MB/s       = {spool['mbps'] / http_floor['mbps']:.2f}x  (target >= 0.8x)"
    )
    print(f"spool MB/s / in-process floor MB/s = {spool['mbps'] / inproc_floor['mbps']:.2f}x")
    print(
        f"in-process spool RSS growth = {spool['rss_growth']:.1f} MB (target <= 50 MB): "
        f"{'OK' if spool['rss_growth'] <= 50 else 'OVER'}"
    )


if __name__ == "__main__":
    main()
