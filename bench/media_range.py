"""Media Range bench: 20 clients seeking through a ~500 MB result over the owner-only media route
`GET /api/media/result/<run>` of the real app, vs Starlette's `FileResponse` on the same file under
the same server, measured in the same run (loopback only, bounded).

What is measured (be honest about it):
  * The file: --mb MiB (default 500) written once with os.urandom (every MiB different, so a wrong
    offset shows), an `ftyp` box first, stored under a `results/<task>/<hex>.mp4` key of a temporary
    LocalStorage root (STORAGE_URL=file://...). It sits in the page cache (it was just written; the
    machine has far more RAM), for both servers alike: this measures the serving path, not the disk.
  * SUBJECT: the whole app's ASGI app (the Reflex app with its FastAPI sub-app,
    `vgen_app.vgen_app:app` called as a factory) under granian, one worker, exactly the
    `Granian(target, factory=True, interface=ASGI, workers=1)` that `reflex run --env prod`
    (`make run`) starts for the backend, with REFLEX_ENV_MODE=prod, minus the frontend build (the
    media route never touches it: no `.web-bench` build, ~3 min less). Lifespan tasks (run worker,
    housekeeping, outbox) run as in production. A temp SQLite database migrated as the other
    benches do, one user (made through the services, tests/helpers.py), a session cookie
    `vgen_session`, a task and a succeeded Run inserted directly whose `result_key` is the file.
    Each request pays what a browser's does: session check, `media.locate` (DB), `storage.size`,
    then `storage.iter_range` (256 KiB reads) in a worker thread through a StreamingResponse.
  * FLOOR: a bare Starlette app whose one route returns `FileResponse(path)` for the same file
    (Starlette 1.10: single Range -> 206, 64 KiB reads through anyio's thread; no Range -> granian's
    `http.response.pathsend`, i.e. the file is sent by granian itself), under the same granian
    command line. Both servers run during the whole bench; the load alternates between them,
    order rotated each round.
  * LOAD: --clients (20) threads, one keep-alive HTTP/1.1 connection each, raw sockets with
    `recv_into` a preallocated buffer (the client's own cost is small and printed: its CPU seconds
    per second, and the floor's MB/s shows how far above the subject the client can go). Each
    thread loops for --seconds: a random length 1-4 MiB at a random offset, `Range: bytes=a-b`;
    --open-frac (10 %) of them are what a video element sends on a seek, `Range: bytes=a-`, read
    for 1-4 MiB and then the connection is dropped (a new one is made). Then --full (2) concurrent
    whole-file GETs (no Range: 200).
  * CHECKED, every response: status (206, or 200 for the whole file), Content-Range, Content-Length,
    the body's length; the first and last 4 KiB and one random 4 KiB of every body against the file
    (os.pread); every 16th range in full; every 4 MiB window of a whole-file read starts with 4 KiB
    compared and every 16th window is compared in full. Any wrong answer makes the verdict "no".
    Before the load: no cookie -> 404, `bytes=<size>-` -> 416 `bytes */<size>`.
  * MB/s = body bytes received by the clients / wall time; latency per range (send -> last byte;
    TTFB send -> headers parsed) over the completed (non-dropped) ranges; server CPU seconds/s.
  * RSS of each server's granian worker (VmRSS every 50 ms and VmHWM, reset before each phase
    through /proc/PID/clear_refs): at start (before any request), after a warm-up, the peak of each
    phase, after each round, and a timeline against the GB served; open file descriptors before
    and after (dropped streams must close their files).

Targets (issues L, P): subject MB/s >= 0.8x the floor's with 20 concurrent seekers (the median of
the rounds' paired ratios: each round runs subject and floor back to back; and the same ratio per
server CPU-second >= 0.8x too, which equals it on a quiet machine where each server's one Python
thread has a core, and keeps a floor starved by other work on a shared machine from flattering the
subject); RSS flat: peak
<= 50 MB over the worker's RSS after a 1 s warm-up of the same load (its thread pools, DB
connections and allocator arenas made; the RSS at start, before any request, is printed too), and
not growing with the amount read: after the last round <= 10 MB above after the middle round (the
second half of the bytes served adds nothing; needs >= 3 rounds).

Usage: .venv/bin/python bench/media_range.py [--mb 500] [--clients 20] [--seconds 10] [--reps 5]
       [--full 2] [--open-frac 0.1] [--profile SECONDS [--gil]] [--soak N]
       [--chunk-kib N] [--server-env K=V] (experiments)
       (about 2.5 min, the 500 MiB file written to the temp dir first; --mb 64 --seconds 3
       --reps 1 to iterate; --profile needs py-spy in .venv/bin: pip install py-spy)
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Self

from common import ROOT, free_port, median, migrated, percentile, temp_sqlite_url, use_database
from reflex_client import (
    _NOT_INHERITED,
    cpu_seconds,
    pyspy_start,
    pyspy_summary,
    session_cookie_for,
)
from upload_stream import RssSampler, children_of, vmrss_mb

MiB = 1024 * 1024
BUF = 4 * MiB
PROBE = 4096
GRANIAN = Path(sys.executable).parent / "granian"

FLOOR_APP = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    PATH = os.environ["FLOOR_FILE"]

    async def media(request):
        return FileResponse(PATH, media_type="video/mp4")

    async def ping(request):
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/file", media, methods=["GET", "HEAD"]), Route("/ping", ping)])
    """
)

# --chunk-kib: the same app with another default chunk size for LocalStorage.iter_range
CHUNK_EXPERIMENT = """
from vgen_app.adapters.storage import LocalStorage

LocalStorage.iter_range.__defaults__ = ({chunk},)

from vgen_app.vgen_app import app  # noqa: E402
"""


# --- servers --------------------------------------------------------------------------------------


class Server:
    """One granian server (one worker) in its own process group; `pid` is the worker."""

    def __init__(
        self,
        name: str,
        target: str,
        cwd: Path,
        env: dict[str, str],
        port: int,
        log: Path,
        host: str,
        factory: bool = False,
    ):
        self.name, self.port, self.log, self.host = name, port, log, host
        cmd = [str(GRANIAN), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", "1", "--log-level", "warning"]
        cmd += (["--factory"] if factory else []) + [target]
        self.cmd = cmd
        self._log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} exited:\n{tail}")
            try:
                status, _h, _b = request_once(self.port, "/ping", {}, self.host)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{self.name} did not answer in {timeout:.0f} s")
            time.sleep(0.2)
        kids = [p for p in children_of(self.proc.pid) if _is_python(p)]
        # granian's worker serves the requests; pick the biggest python child if several
        self.pid = max(kids, key=vmrss_mb) if kids else self.proc.pid
        return time.monotonic() - t0

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, 9)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._log.close()


def _is_python(pid: int) -> bool:
    try:
        return (
            b"python" in Path(f"/proc/{pid}/cmdline").read_bytes()
            or b"granian" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )
    except OSError:
        return False


def open_fds(pid: int, path: str | None = None) -> int:
    """Open file descriptors of `pid`; with `path`, only those open on that file."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return -1
    if path is None:
        return len(fds)
    n = 0
    for fd in fds:
        try:
            n += os.readlink(f"/proc/{pid}/fd/{fd}") == path
        except OSError:
            continue
    return n


# --- a tiny HTTP/1.1 client (raw socket, recv_into; the client must not be the bottleneck) --------


class BadAnswer(Exception):
    pass


def _head_request(path: str, host: str, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Conn:
    def __init__(self, port: int, host: str):
        self.port, self.host = port, host
        self.sock: socket.socket | None = None
        self.buf = bytearray(BUF + 65536)
        self.view = memoryview(self.buf)
        self.connects = 0

    def _connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=120)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        return s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def start(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """Send the request, read the status line and headers; returns (status, headers, the body
        bytes already read)."""
        if self.sock is None:
            self.sock = self._connect()
        self.sock.sendall(_head_request(path, self.host, headers))
        data = b""
        while b"\r\n\r\n" not in data:
            piece = self.sock.recv(65536)
            if not piece:
                raise BadAnswer("connection closed before the headers")
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        if "chunked" in hdrs.get("transfer-encoding", ""):
            raise BadAnswer("chunked body: no Content-Length")
        return status, hdrs, rest

    def body_into(self, first: bytes, want: int) -> int:
        """Read `want` body bytes into self.buf (the first ones already read); returns how many."""
        n = min(len(first), want)
        self.buf[:n] = first[:n]
        sock = self.sock
        assert sock is not None
        while n < want:
            got = sock.recv_into(self.view[n:want], want - n)
            if not got:
                raise BadAnswer(f"connection closed after {n} of {want} body bytes")
            n += got
        return n


def request_once(port: int, path: str, headers: dict[str, str], host: str | None = None):
    c = Conn(port, host or f"127.0.0.1:{port}")
    try:
        status, hdrs, rest = c.start(path, {**headers, "Connection": "close"})
        want = int(hdrs.get("content-length", "0"))
        n = c.body_into(rest, min(want, BUF))
        return status, hdrs, bytes(c.buf[:n])
    finally:
        c.close()


# --- load -----------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.bytes = 0
        self.ranges = 0
        self.dropped = 0
        self.full_compares = 0
        self.probes = 0
        self.lat: list[float] = []
        self.ttfb: list[float] = []
        self.errors: list[str] = []
        self.error_count = 0

    def error(self, msg: str) -> None:
        self.error_count += 1
        if len(self.errors) < 5:
            self.errors.append(msg)


def _check_probe(fd: int, view: memoryview, at_file: int, at_buf: int, n: int) -> bool:
    return os.pread(fd, n, at_file) == view[at_buf : at_buf + n]


def seeker(
    target: dict, size: int, deadline: float, seed: int, open_frac: float, st: Stats
) -> None:
    rng = random.Random(seed)
    fd = os.open(target["file"], os.O_RDONLY)
    conn = Conn(target["port"], target["host"])
    base = dict(target["headers"])
    try:
        while time.perf_counter() < deadline:
            n = rng.randint(MiB, BUF)
            a = rng.randrange(0, size - n + 1)
            open_ended = rng.random() < open_frac
            b = size - 1 if open_ended else a + n - 1
            hdrs = {**base, "Range": f"bytes={a}-" if open_ended else f"bytes={a}-{b}"}
            t0 = time.perf_counter()
            try:
                status, h, rest = conn.start(target["path"], hdrs)
                t1 = time.perf_counter()
                expect_len = b - a + 1
                if status != 206:
                    raise BadAnswer(f"status {status} for {hdrs['Range']}")
                if h.get("content-range") != f"bytes {a}-{b}/{size}":
                    raise BadAnswer(f"Content-Range {h.get('content-range')!r} for {hdrs['Range']}")
                if h.get("content-length") != str(expect_len):
                    raise BadAnswer(
                        f"Content-Length {h.get('content-length')!r}, want {expect_len}"
                    )
                got = conn.body_into(rest, n)
                t2 = time.perf_counter()
                view = conn.view
                ok = _check_probe(fd, view, a, 0, PROBE) and _check_probe(
                    fd, view, a + n - PROBE, n - PROBE, PROBE
                )
                mid = rng.randrange(0, n - PROBE)
                ok = ok and _check_probe(fd, view, a + mid, mid, PROBE)
                st.probes += 3
                if st.ranges % 16 == 0:
                    ok = ok and _check_probe(fd, view, a, 0, n)
                    st.full_compares += 1
                if not ok:
                    raise BadAnswer(f"wrong bytes for {hdrs['Range']}")
                st.bytes += got
                st.ranges += 1
                if open_ended:  # a video element seeking: read what it needs, drop the stream
                    st.dropped += 1
                    conn.close()
                else:
                    st.lat.append(t2 - t0)
                    st.ttfb.append(t1 - t0)
                if h.get("connection", "").lower() == "close":
                    conn.close()
            except (BadAnswer, OSError, ValueError, IndexError) as exc:
                st.error(f"{type(exc).__name__}: {exc}")
                conn.close()
    finally:
        conn.close()
        os.close(fd)


def full_reader(target: dict, size: int, st: Stats) -> None:
    fd = os.open(target["file"], os.O_RDONLY)
    conn = Conn(target["port"], target["host"])
    try:
        t0 = time.perf_counter()
        status, h, rest = conn.start(target["path"], dict(target["headers"]))
        if status != 200 or h.get("content-length") != str(size):
            raise BadAnswer(
                f"whole file: status {status}, Content-Length {h.get('content-length')}"
            )
        at, window = 0, 0
        while at < size:
            want = min(BUF, size - at)
            got = conn.body_into(rest, want)
            rest = rest[got:] if len(rest) > got else b""
            ok = _check_probe(fd, conn.view, at, 0, min(PROBE, got))
            if window % 16 == 0:
                ok = ok and _check_probe(fd, conn.view, at, 0, got)
                st.full_compares += 1
            if not ok:
                raise BadAnswer(f"wrong bytes at {at} of the whole file")
            at += got
            window += 1
        st.bytes += at
        st.ranges += 1
        st.lat.append(time.perf_counter() - t0)
    except (BadAnswer, OSError, ValueError) as exc:
        st.error(f"{type(exc).__name__}: {exc}")
    finally:
        conn.close()
        os.close(fd)


class Timeline:
    """RSS of `pid` once a second, with the body bytes served so far."""

    def __init__(self, pid: int, stats: list[Stats]):
        self.pid, self.stats = pid, stats
        self.points: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            served = sum(s.bytes for s in self.stats)
            self.points.append((time.perf_counter() - self.t0, vmrss_mb(self.pid), served / 1e9))

    def __enter__(self) -> Self:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_phase(target: dict, kind: str, args, size: int, seed: int) -> dict:
    """kind: seek (--clients seekers for --seconds) or full (--full whole-file GETs at once)."""
    server: Server = target["server"]
    count = args.clients if kind == "seek" else args.full
    stats = [Stats() for _ in range(count)]
    deadline = time.perf_counter() + 3600
    if kind == "seek":
        deadline = time.perf_counter() + args.seconds
        threads = [
            threading.Thread(
                target=seeker, args=(target, size, deadline, seed * 1000 + i, args.open_frac, s)
            )
            for i, s in enumerate(stats)
        ]
    else:
        threads = [threading.Thread(target=full_reader, args=(target, size, s)) for s in stats]
    cpu_c, cpu_s = client_cpu(), cpu_seconds(server.pid)
    with RssSampler(server.pid, reset_hwm=True) as rss, Timeline(server.pid, stats) as tl:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        secs = time.perf_counter() - t0
    cpu_c, cpu_s = client_cpu() - cpu_c, cpu_seconds(server.pid) - cpu_s
    total = sum(s.bytes for s in stats)
    lat = [x for s in stats for x in s.lat]
    ttfb = [x for s in stats for x in s.ttfb]
    return {
        "server": server.name,
        "kind": kind,
        "secs": secs,
        "bytes": total,
        "mbps": total / 1e6 / secs,
        "ranges": sum(s.ranges for s in stats),
        "dropped": sum(s.dropped for s in stats),
        "full_compares": sum(s.full_compares for s in stats),
        "probes": sum(s.probes for s in stats),
        "errors": sum(s.error_count for s in stats),
        "error_msgs": [m for s in stats for m in s.errors][:5],
        "p50": percentile(lat, 50) * 1000 if lat else float("nan"),
        "p95": percentile(lat, 95) * 1000 if lat else float("nan"),
        "ttfb50": percentile(ttfb, 50) * 1000 if ttfb else float("nan"),
        "ttfb95": percentile(ttfb, 95) * 1000 if ttfb else float("nan"),
        "rss_base": rss.base,
        "rss_peak": rss.peak,
        "hwm": rss.hwm_ok,
        "rss_after": vmrss_mb(server.pid),
        "client_cpu": cpu_c / secs,
        "server_cpu": cpu_s / secs,
        "timeline": tl.points,
    }


def fmt(r: dict) -> str:
    what = "20 seekers" if r["kind"] == "seek" else "whole file"
    s = (
        f"{r['server']:<8} {what:<10} {r['secs']:5.1f} s {r['bytes'] / 1e9:6.2f} GB "
        f"{r['mbps']:7.1f} MB/s  {r['ranges']:5d} answers"
    )
    if r["kind"] == "seek":
        s += (
            f" ({r['dropped']} dropped)  p50 {r['p50']:6.1f} ms p95 {r['p95']:6.1f} ms  "
            f"TTFB p50 {r['ttfb50']:5.1f} p95 {r['ttfb95']:6.1f} ms"
        )
    s += (
        f"  RSS {r['rss_base']:5.1f} -> peak {r['rss_peak']:5.1f} -> {r['rss_after']:5.1f} MB  "
        f"CPU server {r['server_cpu']:.2f} client {r['client_cpu']:.2f} s/s"
    )
    if r["errors"]:
        s += f"  ERRORS {r['errors']}: {r['error_msgs']}"
    return s


# --- setup ----------------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + os.urandom(MiB - 24))
        left = size - MiB
        while left > 0:
            k = min(MiB, left)
            fh.write(os.urandom(k))
            left -= k


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500, help="result size in MiB (default 500)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=10.0, help="per seek phase")
    ap.add_argument("--reps", type=int, default=5, help="rounds; subject and floor alternate")
    ap.add_argument("--full", type=int, default=2, help="concurrent whole-file GETs per round")
    ap.add_argument("--open-frac", type=float, default=0.1, help="share of `bytes=a-` + drop")
    ap.add_argument("--profile", type=int, default=0, help="then N s of py-spy on the subject")
    ap.add_argument("--gil", action="store_true", help="profile only the thread holding the GIL")
    ap.add_argument(
        "--server-env", action="append", default=[], metavar="K=V", help="EXPERIMENT: subject env"
    )
    ap.add_argument(
        "--soak", type=int, default=0, help="then N more seek phases of the subject alone (RSS)"
    )
    ap.add_argument(
        "--chunk-kib",
        type=int,
        default=0,
        help="EXPERIMENT: the subject with LocalStorage.iter_range's chunk patched to N KiB "
        "(a wrapper module in the temp dir; the app is not edited)",
    )
    args = ap.parse_args()
    assert 16 <= args.mb <= 2048 and 1 <= args.clients <= 64 and 1 <= args.reps <= 7
    assert (
        0 < args.seconds <= 60
        and 0 <= args.full <= 8
        and 0 <= args.profile <= 30
        and 0 <= args.soak <= 30
    )
    size = args.mb * MiB
    if shutil.disk_usage(tempfile.gettempdir()).free < size + 2 * 1024 * MiB:
        raise SystemExit("not enough free disk in the temp dir")

    import logging

    logging.disable(logging.INFO)
    workdir = Path(tempfile.mkdtemp(prefix="vgen-media-bench-"))
    port_app, port_floor = free_port(), free_port()
    app_url = f"http://localhost:{port_app}"
    settings_env = {
        "APP_URL": app_url,
        "APP_PORT": str(port_app),
        "APP_HOST": "127.0.0.1",
        "STORAGE_URL": f"file://{workdir / 'storage'}",
        "MAIL_OUTBOX_DIR": str(workdir / "outbox"),
        "MAIL_LINK_INTERVAL_SECONDS": "0",
        "GENERATION_SIM_DIR": str(workdir / "simulator"),
        "UPLOAD_TMP_DIR": str(workdir / "spool"),
    }
    os.environ.update(settings_env)
    db_url = migrated(temp_sqlite_url("media"))
    use_database(db_url)
    servers: list[Server] = []
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU, load avg "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    try:
        from vgen_app import clock
        from vgen_app.adapters.storage import get_storage
        from vgen_app.db import dispose_engines, session_scope
        from vgen_app.models import Run
        from vgen_app.services import tasks

        user_id, cookie = session_cookie_for("viewer@example.com")
        with session_scope() as db:
            task = tasks.create_task(db, user_id, "lipsync", "Media bench")
            key = f"results/{task.id}/{uuid.uuid4().hex}.mp4"
            run = Run(
                task_id=task.id,
                owner_id=user_id,
                attempt=1,
                status="succeeded",
                progress=1.0,
                price=500,
                model="lipsync",
                inputs={},
                result_key=key,
                result_bytes=size,
                finished_at=clock.now(),
                finished_mail_at=clock.now(),
            )
            db.add(run)
            db.commit()
            run_id = run.id
        dispose_engines()
        path = get_storage().path_for(key)
        t0 = time.perf_counter()
        make_file(path, size)
        print(
            f"result: {size / MiB:.0f} MiB ({size / 1e6:.0f} MB) of os.urandom at {path} "
            f"({time.perf_counter() - t0:.1f} s); run {run_id}; sqlite {db_url}"
        )

        base_env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        base_env.update(settings_env)
        app_env = dict(
            base_env,
            DATABASE_URL=db_url,
            REFLEX_ENV_MODE="prod",
            # no frontend compile/build: the backend alone, its files outside the checkout
            __REFLEX_SKIP_COMPILE="true",
            REFLEX_WEB_WORKDIR=str(workdir / "web"),
            PYTHONPATH=os.pathsep.join([str(workdir), str(ROOT)]),
            PYTHONUNBUFFERED="1",
        )
        extra = dict(kv.split("=", 1) for kv in args.server_env)
        app_env.update(extra)
        if extra:
            print(f"EXPERIMENT: subject environment {extra}")
        (workdir / "floor_app.py").write_text(FLOOR_APP)
        floor_env = dict(base_env, FLOOR_FILE=str(path), PYTHONPATH=str(workdir))
        host = f"localhost:{port_app}"  # APP_URL's host: 127.0.0.1 is redirected there
        target = "vgen_app.vgen_app:app"
        if args.chunk_kib:
            (workdir / "media_experiment.py").write_text(
                CHUNK_EXPERIMENT.format(chunk=args.chunk_kib * 1024)
            )
            target = "media_experiment:app"
            print(f"EXPERIMENT: storage.iter_range chunks of {args.chunk_kib} KiB (not as shipped)")
        subject = Server(
            "subject",
            target,
            ROOT,
            app_env,
            port_app,
            workdir / "app.log",
            host,
            factory=True,
        )
        servers.append(subject)
        floor = Server(
            "floor",
            "floor_app:app",
            workdir,
            floor_env,
            port_floor,
            workdir / "floor.log",
            f"127.0.0.1:{port_floor}",
        )
        servers.append(floor)
        for s in servers:
            took = s.wait_ready()
            print(
                f"{s.name}: {' '.join(s.cmd[1:])} (cwd {'checkout' if s is subject else 'tmp'}) "
                f"answered after {took:.1f} s; worker pid {s.pid}"
            )
        time.sleep(1.0)
        rss_start = {s.name: vmrss_mb(s.pid) for s in servers}
        fds_start = {s.name: open_fds(s.pid) for s in servers}
        media_path = f"/api/media/result/{run_id}"
        targets = {
            "subject": {
                "server": subject,
                "port": port_app,
                "host": host,
                "path": media_path,
                "headers": {"Cookie": cookie},
                "file": str(path),
            },
            "floor": {
                "server": floor,
                "port": port_floor,
                "host": f"127.0.0.1:{port_floor}",
                "path": "/file",
                "headers": {},
                "file": str(path),
            },
        }
        # the route answers what it should before it is loaded
        st, _h, _b = request_once(port_app, media_path, {"Range": "bytes=0-9"}, host)
        assert st == 404, f"no cookie: {st}"
        st, h, _b = request_once(
            port_app, media_path, {"Cookie": cookie, "Range": f"bytes={size}-"}, host
        )
        assert st == 416 and h.get("content-range") == f"bytes */{size}", (st, h)
        st, h, body = request_once(
            port_app, media_path, {"Cookie": cookie, "Range": "bytes=0-15"}, host
        )
        with open(path, "rb") as fh:
            assert st == 206 and body == fh.read(16), (st, body)
        assert h.get("content-type") == "video/mp4", h
        st, h, _b = request_once(port_floor, "/file", {"Range": f"bytes={size}-"})
        assert st == 416, st
        print(
            "checks before the load: no cookie 404, past the end 416 bytes */size, 206 + bytes: ok"
        )
        # warm-up: thread pools, DB connections, allocator arenas (1 s each)
        warm = argparse.Namespace(**{**vars(args), "seconds": 1.0})
        for name in ("subject", "floor"):
            run_phase(targets[name], "seek", warm, size, seed=0)
        rss_warm = {s.name: vmrss_mb(s.pid) for s in servers}
        print(
            f"RSS at start (before any request): subject {rss_start['subject']:.1f} MB, floor "
            f"{rss_start['floor']:.1f} MB; after 1 s warm-up each: subject "
            f"{rss_warm['subject']:.1f} MB, floor {rss_warm['floor']:.1f} MB"
        )

        results: dict[tuple[str, str], list[dict]] = {}
        after_round: dict[str, list[tuple[float, float]]] = {"subject": [], "floor": []}
        served: dict[str, float] = {"subject": 0.0, "floor": 0.0}
        order = ["subject", "floor"]
        for rep in range(args.reps):
            for name in order[rep % 2 :] + order[: rep % 2]:
                phases = ["seek"] + (["full"] if args.full else [])
                for kind in phases:
                    r = run_phase(targets[name], kind, args, size, seed=rep + 1)
                    results.setdefault((name, kind), []).append(r)
                    served[name] += r["bytes"] / 1e9
                    print(f"  round {rep + 1} {fmt(r)}")
                time.sleep(1.0)
                after_round[name].append((served[name], vmrss_mb(targets[name]["server"].pid)))
        time.sleep(2.0)  # dropped streams: give the servers time to notice and close
        fds_end = {s.name: open_fds(s.pid) for s in servers}
        fds_file = {s.name: open_fds(s.pid, str(path)) for s in servers}
        if fds_file["subject"] > 0:  # a dropped stream's generator not closed yet: wait for GC
            time.sleep(8.0)
            fds_file["subject_10s"] = open_fds(subject.pid, str(path))

        if args.soak:
            print(f"soak: {args.soak} more seek phases of the subject, RSS 1 s after each:")
            for i in range(args.soak):
                r = run_phase(targets["subject"], "seek", args, size, seed=100 + i)
                served["subject"] += r["bytes"] / 1e9
                time.sleep(1.0)
                print(
                    f"  soak {i + 1:>2}: {r['mbps']:6.1f} MB/s, peak {r['rss_peak']:6.1f} MB, RSS "
                    f"after {vmrss_mb(subject.pid):6.1f} MB at {served['subject']:5.1f} GB served"
                    + (f"  ERRORS {r['errors']}: {r['error_msgs']}" if r["errors"] else "")
                )

        if args.profile:
            spy = Path(sys.executable).parent / "py-spy"
            if not spy.exists():
                print("--profile: py-spy is not in .venv/bin (pip install py-spy)")
            else:
                out = workdir / "pyspy-media.raw"
                if args.gil:  # what holds the GIL (the worker is one core's worth of Python)
                    rec = subprocess.Popen(
                        [
                            str(spy),
                            "record",
                            "--pid",
                            str(subject.pid),
                            "--duration",
                            str(args.profile + 1),
                            "--format",
                            "raw",
                            "--output",
                            str(out),
                            "--nonblocking",
                            "--threads",
                            "--rate",
                            "200",
                            "--gil",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                    )
                else:
                    rec = pyspy_start(subject.pid, args.profile + 1, out)
                time.sleep(0.5)
                prof = argparse.Namespace(**{**vars(args), "seconds": float(args.profile)})
                r = run_phase(targets["subject"], "seek", prof, size, seed=99)
                rec.communicate(timeout=120)
                print(
                    f"\n-- py-spy{' --gil' if args.gil else ''} on the subject's worker during "
                    f"{fmt(r)}"
                )
                print(pyspy_summary(out, top=40, leaf_top=20))
                keep = Path(tempfile.gettempdir()) / "vgen-media-pyspy.raw"
                shutil.copyfile(out, keep)
                print(f"(raw profile kept at {keep})\n")

        # --- summary ---
        print(f"\nsummary over {args.reps} rounds (median round by MB/s; RSS: max peak):")
        rows: dict[tuple[str, str], dict] = {}
        for key_, res in results.items():
            mid = sorted(res, key=lambda r: r["mbps"])[len(res) // 2]
            rows[key_] = {**mid, "rss_peak": max(r["rss_peak"] for r in res)}
            print("  " + fmt(rows[key_]))
        errors = sum(r["errors"] for res in results.values() for r in res)
        checked = sum(r["ranges"] for res in results.values() for r in res)
        full_cmp = sum(r["full_compares"] for res in results.values() for r in res)
        print(
            f"answers checked: {checked} (status, Content-Range, Content-Length, length, 3 x 4 KiB"
            f" of each against the file; {full_cmp} compared in full); wrong: {errors}"
        )
        sub, flo = rows[("subject", "seek")], rows[("floor", "seek")]
        ratios = [
            a["mbps"] / b["mbps"]
            for a, b in zip(results[("subject", "seek")], results[("floor", "seek")], strict=True)
        ]
        # the verdict: the median of the rounds' paired ratios (subject and floor of one round
        # ran back to back), steadier on a shared machine than the ratio of the two medians
        ratio = median(ratios)
        print(
            f"SEEK: subject {sub['mbps']:.1f} MB/s vs FileResponse {flo['mbps']:.1f} MB/s (median "
            f"rounds: {sub['mbps'] / flo['mbps']:.2f}x); paired per round "
            f"{', '.join(f'{x:.2f}' for x in ratios)}: median {ratio:.2f}x; p50/p95 per range "
            f"{sub['p50']:.1f}/{sub['p95']:.1f} ms vs {flo['p50']:.1f}/{flo['p95']:.1f} ms"
        )
        # MB per CPU-second of the server: the same ratio on a quiet machine (each server has a
        # core to itself, ~1.0 CPU s/s: one Python thread), steadier when other work takes CPU
        eff = [
            (a["mbps"] / max(a["server_cpu"], 1e-9)) / (b["mbps"] / max(b["server_cpu"], 1e-9))
            for a, b in zip(results[("subject", "seek")], results[("floor", "seek")], strict=True)
        ]
        eff_ratio = median(eff)
        fcpu = [r["server_cpu"] for r in results[("floor", "seek")]]
        scpu = [r["server_cpu"] for r in results[("subject", "seek")]]
        print(
            f"SEEK per server CPU-second: paired {', '.join(f'{x:.2f}' for x in eff)}: median "
            f"{eff_ratio:.2f}x (server CPU s/s: subject {min(scpu):.2f}-{max(scpu):.2f}, floor "
            f"{min(fcpu):.2f}-{max(fcpu):.2f}; well under 1.0 means other work took the CPU)"
        )
        if args.full:
            sf, ff = rows[("subject", "full")], rows[("floor", "full")]
            print(
                f"WHOLE FILE x{args.full}: subject {sf['mbps']:.1f} MB/s vs FileResponse "
                f"(granian pathsend) {ff['mbps']:.1f} MB/s = {sf['mbps'] / ff['mbps']:.2f}x "
                "(for information)"
            )
        cpu = max(r["client_cpu"] for res in results.values() for r in res)
        fastest = max(r["mbps"] for res in results.values() for r in res)
        print(
            f"client: at most {cpu:.2f} CPU s/s of {os.cpu_count()}; the same client took the "
            f"floor's {flo['mbps']:.0f} MB/s of ranges ({flo['mbps'] / sub['mbps']:.1f}x the "
            f"subject's) and up to {fastest:.0f} MB/s in one phase: it is not the limit"
        )
        peak_all = max(
            r["rss_peak"] for (n, _k), res in results.items() if n == "subject" for r in res
        )
        growth = peak_all - rss_warm["subject"]
        cold = peak_all - rss_start["subject"]
        ar = after_round["subject"]
        mid = (len(ar) - 1) // 2
        creep = ar[-1][1] - ar[mid][1]
        print(
            f"SUBJECT RSS: start {rss_start['subject']:.1f} MB, after warm-up (the baseline) "
            f"{rss_warm['subject']:.1f} MB, peak {peak_all:.1f} MB (+{growth:.1f} MB over the "
            f"baseline, +{cold:.1f} MB over the start; VmHWM "
            f"{'read' if sub['hwm'] else 'not readable: sampled VmRSS'}), after each round "
            + ", ".join(f"{mb:.1f} MB at {gb:.1f} GB served" for gb, mb in ar)
            + f"; round {len(ar)} vs round {mid + 1}: {creep:+.1f} MB for "
            f"{ar[-1][0] - ar[mid][0]:.1f} GB more"
        )
        fpeak = max(r["rss_peak"] for (n, _k), res in results.items() if n == "floor" for r in res)
        print(
            f"FLOOR RSS: start {rss_start['floor']:.1f} MB, peak {fpeak:.1f} MB, after each "
            "round " + ", ".join(f"{mb:.1f} MB" for _gb, mb in after_round["floor"])
        )
        tl = results[("subject", "seek")][-1]["timeline"]
        print(
            "subject RSS timeline, last seek round (s, MB, GB served): "
            + " ".join(f"{t:.0f}:{mb:.0f}/{gb:.1f}" for t, mb, gb in tl)
        )
        print(
            f"open fds: subject {fds_start['subject']} -> {fds_end['subject']}, floor "
            f"{fds_start['floor']} -> {fds_end['floor']} (DB connections, threads' sockets); "
            f"on the result file, 2 s after the load: subject {fds_file['subject']}"
            + (f" (10 s after: {fds_file['subject_10s']})" if "subject_10s" in fds_file else "")
            + f", floor {fds_file['floor']}; streams dropped by the client: subject "
            f"{sum(r['dropped'] for r in results[('subject', 'seek')])}, floor "
            f"{sum(r['dropped'] for r in results[('floor', 'seek')])}"
        )
        flat = growth <= 50 and creep <= 10 and len(ar) >= 3
        fast = ratio >= 0.8 and eff_ratio >= 0.8
        print(
            f"holds: >= 0.8x FileResponse: {'yes' if fast else 'no'} ({ratio:.2f}x MB/s, "
            f"{eff_ratio:.2f}x per CPU-second); RSS flat "
            f"(peak <= 50 MB over the warmed-up baseline, <= 10 MB more over the second half of "
            f"the rounds, >= 3 rounds): {'yes' if flat else 'no'} (+{growth:.1f} MB, second half "
            f"{creep:+.1f} MB); right answers: {'yes' if errors == 0 else 'NO'}"
        )
        print(f"holds: {'yes' if fast and flat and errors == 0 else 'no'}")
    finally:
        for s in servers:
            s.stop()
        left = [s.name for s in servers if s.proc.poll() is None]
        print(f"servers stopped{'; still running: ' + ', '.join(left) if left else ''}")
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(Path(db_url.removeprefix("sqlite:///")).parent, ignore_errors=True)


if __name__ == "__main__":
    main()
