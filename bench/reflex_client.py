"""Drive the real vgen app from Python the way a browser tab does (for bench/event_roundtrip.py and
bench/upload_stream.py). Loopback only.

* `AppServer`: the app started exactly as `make run` starts it (`reflex run --env prod`, one granian
  worker on SQLite unless Redis is asked for), in its own process group, on a free port, with its
  own frontend build folder (`.web-bench`), database, storage, outbox and spool folders; the whole
  group is killed on exit. `backend_pids()` finds the granian worker(s) for RSS and py-spy.
* `ReflexClient`: one browser tab. A python-socketio `AsyncClient` on Reflex's `/_event` socket
  (namespace `/_event`, websocket transport), the tab token in the query string, and the same
  handshake headers a browser sends (`Cookie` with the HttpOnly session cookie, `Origin`,
  `User-Agent`). The hydrate event rides in the CONNECT packet's auth, as Reflex's state.js does; the
  tab is "hydrated" once the root state's `is_hydrated` turns true (the page's on_load has run).
  `call(name, payload, until=...)` sends one event and waits for the state update that shows it
  done; it returns the round-trip time.
* `session_cookie_for(...)`: users and sessions made directly through `vgen_app.services` (as in
  tests/helpers.py), so hundreds of logged-in tabs need no bcrypt.

python-socketio's asyncio client needs aiohttp (`pip install aiohttp`); it is not an app dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROOT_STATE = "reflex___state____state"
HYDRATED = "is_hydrated_rx_state_"
EVENT_PATH = "_event"
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) vgen-bench/1.0"
# Passed on to the app by AppServer only when the caller sets them; everything else that could send
# mail elsewhere or switch the state manager is dropped (as tests/browser/conftest.py does).
_NOT_INHERITED = (
    "REFLEX_STATE_MANAGER_MODE",
    "REFLEX_REDIS_URL",
    "REDIS_URL",
    "RESEND_API_KEY",
    "RESEND_API_URL",
    "ADMIN_TOKEN",
    "TRUSTED_PROXY_HOPS",
    "LANDING_URL",
    "APP_HOST",
    "REFLEX_SKIP_COMPILE",
    "GRANIAN_WORKERS",
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state_name(cls: type) -> str:
    return cls.get_full_name()


def handler_name(handler: Any) -> str:
    from reflex_base.utils.format import format_event_handler

    return format_event_handler(handler)


def var_key(name: str) -> str:
    """How a state var is named in a delta."""
    return f"{name}_rx_state_"


# --- processes ----------------------------------------------------------------------------------


def _proc_status(pid: int) -> dict[str, str]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def vm_kb(pid: int, field: str = "VmRSS") -> int:
    """VmRSS / VmHWM (peak RSS) of a process, in KiB."""
    return int(_proc_status(pid)[field].split()[0])


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: `echo 5 > /proc/PID/clear_refs`); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                pids.append(int(entry))
        except (ProcessLookupError, PermissionError):
            continue
    return sorted(pids)


def parent_of(pid: int) -> int:
    try:
        return int(_proc_status(pid)["PPid"])
    except (OSError, KeyError, ValueError):
        return 0


class AppServer:
    """The app as `make run` starts it, in its own process group; killed as a group on exit."""

    def __init__(
        self,
        workdir: Path,
        *,
        env: dict[str, str] | None = None,
        web_workdir: Path = ROOT / ".web-bench",
        start_timeout: float = 300.0,
        app_root: Path = ROOT,
    ):
        self.workdir = Path(workdir)
        # Another checkout to run `make run` in (to try a change without touching this one).
        self.app_root = Path(app_root)
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "app.log"
        self.db_url = f"sqlite:///{self.workdir / 'vgen.db'}"
        self.extra_env = dict(env or {})
        self.web_workdir = web_workdir
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        self.startup_s = 0.0

    def app_env(self) -> dict[str, str]:
        """The settings the app runs with (the bench process uses the same to make users)."""
        w = self.workdir
        env = {
            "APP_PORT": str(self.port),
            "APP_URL": self.url,
            "APP_HOST": "127.0.0.1",
            "DATABASE_URL": self.db_url,
            "MAIL_OUTBOX_DIR": str(w / "outbox"),
            "MAIL_LINK_INTERVAL_SECONDS": "0",
            "STORAGE_URL": f"file://{w / 'storage'}",
            "GENERATION_SIM_DIR": str(w / "simulator"),
            "UPLOAD_TMP_DIR": str(w / "spool"),
            "PYTHONUNBUFFERED": "1",
            "REFLEX_WEB_WORKDIR": str(self.web_workdir),
        }
        env.update(self.extra_env)
        return env

    def start(self) -> AppServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.app_env())
        t0 = time.monotonic()
        self._log_fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["make", "run"],
            cwd=self.app_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed as a whole
        )
        self.pgid = self.proc.pid
        deadline = t0 + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"`make run` exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self._answers("/ping") and self._answers("/"):
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"`make run` did not answer in time:\n{self.log_tail()}")
            time.sleep(0.5)
        self.startup_s = time.monotonic() - t0
        return self

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.base + path, timeout=3) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        """Every process still in the server's process group."""
        return group_pids(self.pgid) if self.pgid else []

    def backend_pids(self) -> list[int]:
        """The processes that serve requests: granian's worker(s) (children of granian's main
        process), or the granian process itself if it has no worker children."""
        pids = self.pids()
        py = [p for p in pids if "python" in cmdline(p) or "reflex" in cmdline(p)]
        children: dict[int, list[int]] = {}
        for p in py:
            children.setdefault(parent_of(p), []).append(p)
        # The deepest python processes of the tree: make -> reflex -> (granian main ->) worker.
        leaves = [p for p in py if not children.get(p)]
        return leaves or py

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            pgid = os.getpgid(self.proc.pid)
        except ProcessLookupError:
            pgid = None
        if pgid is not None:
            for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(pgid, sig)
                except ProcessLookupError:
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=wait)
                deadline = time.monotonic() + wait
                while group_pids(pgid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not group_pids(pgid):
                    break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log_fh.close()
        self.proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_app_settings(server: AppServer) -> None:
    """Point this process's vgen settings and engines at the server's database, storage etc."""
    from vgen_app.config import reset_settings
    from vgen_app.db import dispose_engines

    dispose_engines()
    for key, value in server.app_env().items():
        os.environ[key] = value
    reset_settings()


# --- users --------------------------------------------------------------------------------------


def session_cookie_for(email: str, password: str = "correct horse") -> tuple[str, str]:
    """A signed-up, activated user with a fresh session, made through the services directly:
    (user_id, Cookie header value), as tests/helpers.py does. Uses the current DATABASE_URL."""
    from tests.helpers import login_session, make_user
    from vgen_app.db import session_scope
    from vgen_app.services.cookies import cookie_name

    with session_scope() as db:
        user_id = make_user(db, email, password)
    with session_scope() as db:
        token = login_session(db, email, password)
    return user_id, f"{cookie_name()}={token}"


# --- one browser tab ----------------------------------------------------------------------------


class ReflexClient:
    """One browser tab on the app's `/_event` socket."""

    def __init__(self, base: str, *, cookie: str | None = None, origin: str | None = None):
        self.base = base.rstrip("/")
        self.origin = origin or self.base
        self.cookie = cookie
        self.token = str(uuid.uuid4())
        self.path = "/"
        self.state: dict[str, dict[str, Any]] = {}
        self.updates = 0
        # (predicate on the whole update {"delta": ..., "events": [...]}, future of its arrival time)
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future[float]]] = []
        self._hydrated: asyncio.Event | None = None
        self.sio: Any = None

    def router_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pathname": self.path, "asPath": self.path}
        parts = [p for p in self.path.split("/") if p]
        if len(parts) == 2 and parts[0] == "tasks":
            data["query"] = {"task_id": parts[1]}  # the route's params, as useParams gives them
        return data

    def event(self, name: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"name": name, "payload": payload or {}, "router_data": self.router_data()}

    def _on_update(self, update: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.updates += 1
        delta = update.get("delta") or {}
        for substate, values in delta.items():
            self.state.setdefault(substate, {}).update(values)
        if delta.get(ROOT_STATE, {}).get(HYDRATED) and self._hydrated is not None:
            self._hydrated.set()
        if self._waiters:
            keep = []
            for pred, fut in self._waiters:
                if fut.done():
                    continue
                if pred(update):
                    fut.set_result(now)
                else:
                    keep.append((pred, fut))
            self._waiters = keep

    async def connect(self, path: str = "/", timeout: float = 60.0) -> float:
        """Open the socket as a page load of `path` does and wait for hydration; returns seconds."""
        import socketio

        self.path = path
        self._hydrated = asyncio.Event()
        self.sio = socketio.AsyncClient(reconnection=False, logger=False, engineio_logger=False)

        async def on_event(data: Any) -> None:
            self._on_update(data)

        self.sio.on("event", on_event, namespace="/" + EVENT_PATH)
        headers = {"Origin": self.origin, "User-Agent": USER_AGENT}
        if self.cookie:
            headers["Cookie"] = self.cookie
        boot = self.event(f"{ROOT_STATE}.hydrate_and_load")
        t0 = time.perf_counter()
        await self.sio.connect(
            f"{self.base}/{EVENT_PATH}?token={self.token}",
            headers=headers,
            auth={"event": boot},
            transports=["websocket"],
            namespaces=["/" + EVENT_PATH],
            socketio_path=EVENT_PATH,
            wait_timeout=timeout,
        )
        await asyncio.wait_for(self._hydrated.wait(), timeout)
        return time.perf_counter() - t0

    async def call(
        self,
        name: str,
        payload: dict[str, Any] | None = None,
        *,
        until: Callable[[dict], bool] | None = None,
        timeout: float = 120.0,
    ) -> float:
        """Send one event; wait for the update `until(update)` accepts (default: any update).
        Returns the round-trip time in seconds."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((until or (lambda _d: True), fut))
        t0 = time.perf_counter()
        await self.sio.emit("event", self.event(name, payload), namespace="/" + EVENT_PATH)
        done = await asyncio.wait_for(fut, timeout)
        return done - t0

    def wait_for(self, until: Callable[[dict], bool]) -> asyncio.Future[float]:
        """A future resolved (with perf_counter time) by the first update `until(update)` accepts."""
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((until, fut))
        return fut

    def get(self, state: str, var: str, default: Any = None) -> Any:
        return self.state.get(state, {}).get(var_key(var), default)

    async def close(self) -> None:
        if self.sio is not None:
            with contextlib.suppress(Exception):
                await self.sio.disconnect()
            self.sio = None


def changed(
    state: str, var: str, test: Callable[[Any], bool] | None = None
) -> Callable[[dict], bool]:
    """A predicate: the update's delta carries `state.var` (and `test(value)` holds, if given)."""
    key = var_key(var)

    def pred(update: dict) -> bool:
        values = (update.get("delta") or {}).get(state)
        if not values or key not in values:
            return False
        return test is None or test(values[key])

    return pred


def frontend_event(name: str) -> Callable[[dict], bool]:
    """A predicate: the update asks the browser to run `name` (e.g. `_call_script`)."""

    def pred(update: dict) -> bool:
        return any(e.get("name") == name for e in update.get("events") or ())

    return pred


async def connect_all(
    clients: list[ReflexClient],
    path: str | Callable[[int], str],
    *,
    concurrency: int = 20,
    timeout: float = 120.0,
) -> list[float]:
    """Connect and hydrate many tabs, `concurrency` at a time; their hydration times."""
    sem = asyncio.Semaphore(concurrency)
    times: list[float] = [0.0] * len(clients)

    async def one(i: int, c: ReflexClient) -> None:
        async with sem:
            times[i] = await c.connect(path(i) if callable(path) else path, timeout=timeout)

    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))
    return times


# --- measuring the server -----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pyspy_start(pid: int, seconds: int, out: Path, *, idle: bool = False) -> subprocess.Popen:
    """`py-spy record` (raw collapsed stacks, all threads) on `pid` for `seconds`."""
    spy = Path(sys.executable).parent / "py-spy"
    cmd = [str(spy), "record", "--pid", str(pid), "--duration", str(seconds), "--format", "raw"]
    cmd += ["--output", str(out), "--nonblocking", "--threads", "--rate", "200"]
    if idle:
        cmd.append("--idle")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


# Frames every stack of a thread passes through (process start-up, the server loop, thread
# bootstrap): left out of the inclusive list, which is about the work.
_BOILERPLATE = (
    "click/core.py",
    "granian/server/",
    "reflex/reflex.py",
    "reflex/utils/exec.py",
    "multiprocessing/",
    "<module> (reflex",
    "threading.py",
    "asyncio/base_events.py:6",
    "BaseEventLoop._run_once (asyncio/base_events.py:1922)",
)


def pyspy_summary(out: Path, top: int = 30, leaf_top: int = 15) -> str:
    """Top inclusive (start-up and loop frames left out) and leaf frames of a raw py-spy
    profile, as text."""
    import collections

    if not out.exists():
        return f"(no profile at {out})"
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        c = int(count)
        frames = stack.split(";")
        total += c
        threads[frames[0]] += c
        for f in set(frames[1:]):
            if not any(b in f for b in _BOILERPLATE):
                inclusive[f] += c
        leaf[frames[-1]] += c
    lines = [f"py-spy: {total} samples (active threads only) -> {out}"]
    lines.append("  samples per thread:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in threads.most_common(8)]
    lines.append("  top inclusive frames (start-up, server loop and thread bootstrap left out):")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines.append("  top leaf frames:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in leaf.most_common(leaf_top)]
    return "\n".join(lines)
