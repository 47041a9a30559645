"""HTTP load from Debian's `wrk` (C, one thread by default): a load generator that is not the
bottleneck, unlike a Python client on the same two cores. Installed by the bench when missing
(`apt-get install -y wrk`, the package registry). `bare_asgi_server` starts the floor every HTTP
bench compares with: a plain ASGI app (no framework, no middleware) under the same server.

    from loadgen import ensure_wrk, wrk, bare_asgi_server
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from common import ROOT, free_port

BARE_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while True:  # drain the body (a PUT's JSON) before answering, as a real route does
        message = await receive()
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})
"""

LUA = """
wrk.method = %(method)s
wrk.body = %(body)s
%(headers)s
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write("WRKJSON " .. string.format(
    '{"requests": %%d, "duration_us": %%d, "non2xx": %%d, "errors": %%d, '
    .. '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, summary.errors.status, errors,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: installing wrk (apt-get install -y wrk)", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def _lua_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string literal for our ASCII bodies


def wrk(
    url: str,
    *,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
    connections: int = 50,
    seconds: float = 10.0,
    threads: int = 1,
) -> dict:
    """Run wrk against `url`; req/s and latency percentiles (ms), non-2xx and socket errors."""
    binary = ensure_wrk()
    lines = "\n".join(
        f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in (headers or {}).items()
    )
    script = LUA % {
        "method": _lua_str(method),
        "body": _lua_str(body) if body is not None else "nil",
        "headers": lines,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                binary,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                f.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        os.unlink(f.name)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {out.stdout[-1500:]} {out.stderr[-1500:]}")
    data = json.loads(line.removeprefix("WRKJSON "))
    secs = data["duration_us"] / 1e6
    return {
        "n": data["requests"],
        "rps": data["requests"] / secs,
        "p50": data["p50_us"] / 1000,
        "p90": data["p90_us"] / 1000,
        "p99": data["p99_us"] / 1000,
        "max": data["max_us"] / 1000,
        "non2xx": data["non2xx"],
        "errors": data["errors"],
    }


def fmt(r: dict) -> str:
    bad = f", {r['non2xx']} non-2xx" if r["non2xx"] else ""
    bad += f", {r['errors']} socket errors" if r["errors"] else ""
    return (
        f"{r['rps']:8.0f} req/s  p50 {r['p50']:6.1f} ms  p90 {r['p90']:6.1f} ms  "
        f"p99 {r['p99']:6.1f} ms{bad}"
    )


def wait_up(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not start: {log.read_text()[-2000:]}")


def uvicorn_cmd(target: str, port: int, *, factory: bool = False, workers: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "uvicorn", target]
    if factory:
        cmd.append("--factory")
    return cmd + [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


@contextlib.contextmanager
def server(
    cmd: list[str], cwd: Path, env: dict[str, str], probe: str
) -> Iterator[subprocess.Popen]:
    log = cwd / f"server-{int(time.time() * 1000)}.log"
    env = dict(env, PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT)]))
    proc = subprocess.Popen(
        cmd, env=env, cwd=str(cwd), stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    try:
        wait_up(probe, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        tail = log.read_text().strip()
        if tail:
            print("server log tail:", tail[-800:])


@contextlib.contextmanager
def bare_asgi_server(tmp: Path) -> Iterator[str]:
    """The floor: a plain ASGI app (no framework, no middleware) under uvicorn, 1 worker."""
    (tmp / "bench_bare.py").write_text(BARE_APP)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with server(uvicorn_cmd("bench_bare:app", port), tmp, dict(os.environ), base + "/"):
        yield base
