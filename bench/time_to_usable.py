"""Time to a usable page in Chromium (issue P): from navigation start to the moment the page can
be used — hydrated and its `on_load` answered (its data on screen) — for `/`, `/tasks/{id}` and
`/tokens` of the app, against a blank Reflex 0.10.1 page in the same run (target <= 1.3x).

SUBJECT: the app as `make run` starts it (bench/reflex_client.py `AppServer`: production build,
one granian worker, SQLite), one signed-in user (a session cookie made through the services) with
3 tasks of 3 succeeded runs each and 30 balance changes. A page is usable when the element that
its on_load fills is in the DOM: the tasks table's first row link (`/`), the run list (`/tasks/…`),
a row of the balance history (`/tokens`).
FLOOR: a blank Reflex app (one page: a button disabled until its on_load has set a var), built
and run the same way (`reflex run --env prod`, its own port and build folder), usable when the
button is enabled — what every Reflex page pays: the HTML, the JS, the socket, hydration and one
on_load round trip.

Measured in the page: an init script watches the DOM (MutationObserver) and records
`performance.now()` (ms since the navigation started) when the element first appears. Each
navigation is a fresh browser context (no cache, no service worker: a first visit), headless
/usr/bin/chromium; pages interleaved, --reps each, median reported.

    .venv/bin/python bench/time_to_usable.py [--reps 9]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port
from first_load_js import BLANK_RXCONFIG  # the same blank app's config
from reflex_client import AppServer, session_cookie_for, use_app_settings

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
TARGET = 1.3

BLANK_APP = """import reflex as rx


class S(rx.State):
    loaded: bool = False

    @rx.event
    def on_load(self):
        self.loaded = True


def index() -> rx.Component:
    return rx.button("Ready", disabled=~S.loaded, id="ready")


app = rx.App()
app.add_page(index, route="/", on_load=S.on_load)
"""

WATCH = """
(() => {
  const selector = %r;
  const seen = () => {
    if (window.__usableAt === undefined && document.querySelector(selector)) {
      window.__usableAt = performance.now();
    }
  };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true, attributes: true});
  document.addEventListener("DOMContentLoaded", seen);
})();
"""


class BlankServer:
    def __init__(self, work: Path) -> None:
        self.dir = work / "blank"
        (self.dir / "blankapp").mkdir(parents=True, exist_ok=True)
        (self.dir / "blankapp" / "__init__.py").write_text("")
        (self.dir / "blankapp" / "blankapp.py").write_text(BLANK_APP)
        (self.dir / "rxconfig.py").write_text(BLANK_RXCONFIG)
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.log = work / "blank.log"
        self.proc: subprocess.Popen | None = None
        self.web = work / "blank_web"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REFLEX_", "REDIS"))}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            REFLEX_CHECK_LATEST_VERSION="0",
            REFLEX_USE_NPM="1",
            NPM_CONFIG_REGISTRY="https://registry.npmjs.org/",
            REFLEX_WEB_WORKDIR=str(self.web),
        )
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "reflex"), "run", "--env", "prod", "--frontend-port", str(self.port),
             "--backend-host", "127.0.0.1"],
            cwd=self.dir, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"blank app exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("blank app did not start")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)


def seed() -> tuple[str, str]:
    """The signed-in user: (cookie header, first task id)."""
    from vgen_app import clock
    from vgen_app.db import session_scope
    from vgen_app.models import Run, RunStatus
    from vgen_app.services import ledger, tasks

    user_id, cookie = session_cookie_for("usable@example.com")
    first = ""
    with session_scope() as db:
        ledger.change_balance(db, user_id, 5000, "manual")
        for k in range(3):
            task = tasks.create_task(db, user_id, "lipsync", f"Usable task {k + 1}")
            first = first or task.id
            for a in range(1, 4):
                db.add(
                    Run(task_id=task.id, owner_id=user_id, attempt=a, price=10,
                        status=RunStatus.SUCCEEDED, model="lipsync", inputs={},
                        finished_mail_at=clock.now())
                )  # fmt: skip
            db.commit()
    for i in range(30):
        with session_scope() as db:
            ledger.change_balance(db, user_id, -1, "manual", note=f"bench {i}")
    return cookie, first


def measure(browser, url: str, selector: str, cookie: str | None) -> float:
    context = browser.new_context()
    try:
        if cookie:
            name, _, value = cookie.partition("=")
            origin = "/".join(url.split("/", 3)[:3])  # the cookie for every path of the site
            context.add_cookies([{"name": name, "value": value, "url": origin + "/"}])
        context.add_init_script(WATCH % selector)
        page = context.new_page()
        page.goto(url, wait_until="commit")
        try:
            page.wait_for_function("window.__usableAt !== undefined", timeout=60_000)
        except Exception:
            print(f"not usable: {url} ({selector}): {page.inner_text('body')[:1500]!r}")
            raise
        return float(page.evaluate("window.__usableAt"))
    finally:
        context.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    args = ap.parse_args()
    assert 1 <= args.reps <= 30
    import logging

    from playwright.sync_api import sync_playwright

    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="vgen-bench-usable-"))
    server = AppServer(work / "app")
    blank = BlankServer(work)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU, load avg "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    try:
        server.start()
        print(f"app answered after {server.startup_s:.0f} s at {server.url}")
        use_app_settings(server)
        cookie, task_id = seed()
        t0 = time.monotonic()
        blank.start()
        print(f"blank Reflex app answered after {time.monotonic() - t0:.0f} s at {blank.url}")
        pages = [
            ("blank Reflex page /", blank.url + "/", "#ready:not([disabled])", None),
            ("/ (My tasks)", server.url + "/", '#tasks-table a[href^="/tasks/"]', cookie),
            ("/tasks/{id}", f"{server.url}/tasks/{task_id}", "#runs [id^=run-]", cookie),
            ("/tokens", server.url + "/tokens", "#history tbody tr", cookie),
        ]
        times: dict[str, list[float]] = {name: [] for name, *_ in pages}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            for name, url, sel, ck in pages:  # warm-up: server caches, the OS page cache
                measure(browser, url, sel, ck)
            for r in range(args.reps):
                for name, url, sel, ck in pages if r % 2 == 0 else list(reversed(pages)):
                    times[name].append(measure(browser, url, sel, ck))
            browser.close()
        floor = statistics.median(times[pages[0][0]])
        print(f"\ntime to usable, median of {args.reps} first visits (ms from navigation start):")
        for name, *_ in pages:
            med = statistics.median(times[name])
            runs = ", ".join(f"{t:.0f}" for t in times[name])
            ratio = med / floor
            verdict = (
                ""
                if name == pages[0][0]
                else (f"  {ratio:.2f}x  (<= {TARGET}x: {'HOLDS' if ratio <= TARGET else 'MISSED'})")
            )
            print(f"  {name:<22} {med:7.0f} ms  [{runs}]{verdict}")
    except BaseException:
        print("app log tail:", server.log_tail(60))
        raise
    finally:
        blank.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
