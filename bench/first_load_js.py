"""First-load JavaScript of vgen vs a blank Reflex 0.10.1 app built the same way (target <= 1.2x).

Both apps are built with `reflex export --frontend-only --no-zip` with REFLEX_WEB_WORKDIR pointing at a temp
dir (the repo's .web is never touched). The static build lands in `<REFLEX_WEB_WORKDIR>/build/client`
(React Router prerender: `index.html`, `login.html`, `assets/*.js`).

Two measures per page:
  * static: the route's prerendered HTML is parsed for `<script src>`, `<link rel=modulepreload>` and the
    `import "..."` / `import("...")` specifiers in inline module scripts; the referenced files are summed raw and
    gzipped (Python gzip, level 9).
  * browser: headless /usr/bin/chromium (playwright sync API) loads the page from a loopback http.server over
    the build; every JS response fetched until load + 2 s of quiet is summed (raw, and gzip-9 of the same
    bytes). The websocket to the (absent) backend just fails; no backend is started.

Usage: .venv/bin/python bench/first_load_js.py [--keep DIR]   (builds take ~0.5-1 min each)
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"

BLANK_RXCONFIG = """import os
os.environ.setdefault("REFLEX_USE_NPM", "1")
os.environ.setdefault("REFLEX_CHECK_LATEST_VERSION", "0")
os.environ.setdefault("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/")
import reflex as rx

config = rx.Config(
    app_name="blankapp",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    disable_plugins=[rx.plugins.SitemapPlugin],
)
"""

BLANK_APP = """import reflex as rx


def index() -> rx.Component:
    return rx.text("Hello")


app = rx.App()
app.add_page(index, route="/")
"""


def build(app_dir: Path, web_dir: Path) -> Path:
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        REFLEX_USE_NPM="1",
        REFLEX_CHECK_LATEST_VERSION="0",
        NPM_CONFIG_REGISTRY="https://registry.npmjs.org/",
        REFLEX_WEB_WORKDIR=str(web_dir),
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(VENV_BIN / "reflex"), "export", "--frontend-only", "--no-zip"],
        check=False,
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        sys.exit(f"build failed in {app_dir}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"built {app_dir} in {time.perf_counter() - t0:.1f} s")
    return web_dir / "build" / "client"


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


def page_html(client: Path, route: str) -> Path:
    name = route.strip("/")
    for cand in (
        [client / "index.html"]
        if not name
        else [client / f"{name}.html", client / name / "index.html"]
    ):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no prerendered HTML for {route} in {client}")


SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=\"([^\"]+)\"", re.IGNORECASE)
PRELOAD = re.compile(
    r"<link[^>]*rel=\"modulepreload\"[^>]*href=\"([^\"]+)\"|"
    r"<link[^>]*href=\"([^\"]+)\"[^>]*rel=\"modulepreload\"",
    re.IGNORECASE,
)
INLINE_IMPORT = re.compile(r"""import\s*\(?\s*["'](/[^"']+\.js)["']|from\s*["'](/[^"']+\.js)["']""")


def static_js(client: Path, route: str) -> tuple[int, int, int]:
    html = page_html(client, route).read_text()
    urls: set[str] = set()
    for m in SCRIPT_SRC.finditer(html):
        urls.add(m.group(1))
    for m in PRELOAD.finditer(html):
        urls.add(m.group(1) or m.group(2))
    for m in INLINE_IMPORT.finditer(html):
        urls.add(m.group(1) or m.group(2))
    raw = gzipped = 0
    for url in urls:
        data = (client / url.split("?")[0].lstrip("/")).read_bytes()
        raw += len(data)
        gzipped += gz(data)
    return len(urls), raw, gzipped


class SpaHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def send_head(self):
        path = self.path.split("?")[0].split("#")[0]
        base = Path(self.directory)
        rel = path.strip("/")
        if not rel:
            target = "index.html"
        elif (base / rel).is_file():
            target = rel
        elif (base / f"{rel}.html").is_file():
            target = f"{rel}.html"
        elif (base / rel / "index.html").is_file():
            target = f"{rel}/index.html"
        else:
            target = "__spa-fallback.html"
        self.path = "/" + target
        return super().send_head()


def browser_js(client: Path, routes: list[str]) -> dict[str, tuple[int, int, int]]:
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(SpaHandler, directory=str(client))
    )
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out: dict[str, tuple[int, int, int]] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                ],
            )
            try:
                for route in routes:
                    ctx = browser.new_context()
                    page = ctx.new_page()
                    seen: dict[str, bytes] = {}
                    last = [time.monotonic()]

                    def on_response(resp, seen=seen, last=last):
                        last[0] = time.monotonic()
                        url = resp.url
                        if not url.startswith(f"http://127.0.0.1:{port}/"):
                            return
                        ctype = resp.headers.get("content-type", "")
                        if url.split("?")[0].endswith((".js", ".mjs")) or "javascript" in ctype:
                            try:
                                seen[url] = resp.body()
                            except Exception:  # noqa: BLE001, S110 - a body not kept (redirect) is not JS
                                pass

                    page.on("response", on_response)
                    page.goto(f"http://127.0.0.1:{port}{route}", wait_until="load", timeout=30000)
                    end = time.monotonic() + 10
                    while time.monotonic() < end and time.monotonic() - last[0] < 2:
                        page.wait_for_timeout(200)
                    raw = sum(len(b) for b in seen.values())
                    out[route] = (len(seen), raw, sum(gz(b) for b in seen.values()))
                    ctx.close()
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keep", help="build into this dir and keep it (reused if already built)")
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vgen-fljs-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        vgen_client = work / "vgen_web" / "build" / "client"
        if not (vgen_client / "index.html").is_file():
            vgen_client = build(ROOT, work / "vgen_web")
        blank_dir = work / "blank"
        blank_client = work / "blank_web" / "build" / "client"
        if not (blank_client / "index.html").is_file():
            (blank_dir / "blankapp").mkdir(parents=True, exist_ok=True)
            (blank_dir / "blankapp" / "__init__.py").write_text("")
            (blank_dir / "blankapp" / "blankapp.py").write_text(BLANK_APP)
            (blank_dir / "rxconfig.py").write_text(BLANK_RXCONFIG)
            blank_client = build(blank_dir, work / "blank_web")

        rows = [
            ("vgen", "/", vgen_client),
            ("vgen", "/login", vgen_client),
            ("blank", "/", blank_client),
        ]
        stat = {(a, r): static_js(c, r) for a, r, c in rows}
        brow: dict = {}
        if not args.no_browser:
            try:
                for app_name, client, routes in (
                    ("vgen", vgen_client, ["/", "/login"]),
                    ("blank", blank_client, ["/"]),
                ):
                    for r, v in browser_js(client, routes).items():
                        brow[(app_name, r)] = v
            except Exception as exc:  # noqa: BLE001
                print(f"browser measure skipped: {exc!r}")

        print(f"{'app':6} {'route':7} {'method':8} {'files':>5} {'raw KB':>9} {'gzip KB':>9}")
        for app_name, route, _ in rows:
            for label, table in (("static", stat), ("browser", brow)):
                if (app_name, route) in table:
                    n, raw, g = table[(app_name, route)]
                    print(
                        f"{app_name:6} {route:7} {label:8} {n:5d} {raw / 1024:9.1f} {g / 1024:9.1f}"
                    )
        for label, table in (("static", stat), ("browser", brow)):
            if ("blank", "/") not in table:
                continue
            _, braw, bgz = table[("blank", "/")]
            for route in ("/", "/login"):
                if ("vgen", route) in table:
                    _, raw, g = table[("vgen", route)]
                    verdict = "OK" if g / bgz <= 1.2 else "OVER"
                    print(
                        f"ratio {label:8} vgen {route:7} / blank /: raw {raw / braw:.2f}x  "
                        f"gzip {g / bgz:.2f}x  (target <= 1.2x: {verdict})"
                    )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
