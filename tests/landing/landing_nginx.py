"""The landing's nginx configuration (deploy/landing-nginx.conf) for the tests: the headers it
adds, the inline script/style hashes a built landing needs, and a real nginx serving a build
with that very file (only `listen` and `root` swapped for a free port and the build's folder)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vgen_app.api.headers import script_hashes_of

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "landing-nginx.conf"
LISTEN = "listen 80;"
DOCROOT = "root /usr/share/nginx/html;"
START_TIMEOUT_S = 30

_ADD_HEADER = re.compile(
    r'^\s*add_header\s+(\S+)\s+(?:"([^"]*)"|(\S+))\s+always;\s*$', re.MULTILINE
)
_STYLE = re.compile(rb"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)
# What a CSP without 'unsafe-inline' / 'unsafe-hashes' refuses besides inline elements.
INLINE_ATTRIBUTE = re.compile(
    rb"""<[^>]*\s(?:style|on[a-z]+)\s*=|(?:href|src|action)\s*=\s*["']?\s*javascript:""",
    re.IGNORECASE,
)


def conf_text() -> str:
    return CONF.read_text()


def conf_headers(text: str | None = None) -> dict[str, str]:
    """`add_header` name (lower case) → value; a variable's value (`$landing_hsts`) as written."""
    found: dict[str, str] = {}
    for name, quoted, bare in _ADD_HEADER.findall(text or conf_text()):
        assert name.lower() not in found, f"{name} added twice"
        found[name.lower()] = quoted if quoted or not bare else bare
    return found


def static_headers() -> dict[str, str]:
    """The headers every response carries whatever the request (no nginx variable in them)."""
    return {k: v for k, v in conf_headers().items() if "$" not in v}


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}


def _sha(body: bytes) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def inline_hashes(dist: Path) -> tuple[set[str], set[str]]:
    """`sha256-…` of every inline script and every `<style>` element of the built pages."""
    scripts: set[str] = set()
    styles: set[str] = set()
    for page in sorted(dist.rglob("*.html")):
        html = page.read_bytes()
        scripts.update(script_hashes_of(html))
        styles.update(_sha(body) for body in _STYLE.findall(html))
    return scripts, styles


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_conf_for(dist: Path, port: int, workdir: Path) -> Path:
    """deploy/landing-nginx.conf inside a minimal nginx.conf of its own: `listen` and `root`
    replaced, everything else exactly as shipped."""
    text = conf_text()
    assert text.count(LISTEN) == 1 and text.count(DOCROOT) == 1, "listen/root lines changed"
    server = text.replace(LISTEN, f"listen 127.0.0.1:{port};").replace(DOCROOT, f"root {dist};")
    (workdir / "landing.conf").write_text(server)
    temp = workdir / "temp"
    temp.mkdir(exist_ok=True)
    main = f"""
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {workdir}/landing.conf;
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(main)
    return path


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


@contextmanager
def running_nginx(dist: Path, workdir: Path) -> Iterator[str]:
    """A real nginx serving `dist` with the shipped configuration; yields its base URL."""
    binary = nginx_binary()
    assert binary, "nginx is not installed"
    port = _free_port()
    conf = nginx_conf_for(dist, port, workdir)
    check = subprocess.run(
        [binary, "-t", "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}"
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / "error.log").read_text(errors="replace")
                    raise AssertionError(f"nginx did not answer on {url}:\n{log}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
