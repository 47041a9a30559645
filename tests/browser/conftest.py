"""Real-browser journeys: the app started exactly as the README says (`make run`), driven by
Debian's Chromium through Playwright.

The app runs in its own process group with a throw-away database and mail outbox; the whole group
is killed at the end of the session. Screenshots go to `test-artifacts/` (git-ignored).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 180
# Set by the parent conftest for the in-process tests; the app under `make run` must not inherit
# them (or anything that would send mail elsewhere or switch the state manager).
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
    # The in-process tests skip Reflex's compile; the app under test must build its frontend.
    "__REFLEX_SKIP_COMPILE",
    "REFLEX_SKIP_COMPILE",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


# --- the app -------------------------------------------------------------------------------------


@dataclass
class RunningApp:
    url: str
    outbox: Path
    log: Path
    workdir: Path
    pgid: int = 0  # the server's process group (`make run` and all it started)

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log, lines)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing else of the group (workers) survives.
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(1)


def _scaled_env(workdir: Path) -> tuple[dict[str, str], callable]:
    """PostgreSQL (a fresh database) + Redis + 3 workers: the production shape."""
    import psycopg
    import redis

    from tests.conftest import PG_ADMIN_DSN, REQUIRE_PG

    name = f"vgen_browser_{os.getpid()}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        client = redis.Redis(host="127.0.0.1", port=6379, db=7, socket_connect_timeout=3)
        client.flushdb()
    except Exception as exc:  # noqa: BLE001
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL and Redis are required here: {exc}")
        pytest.skip(f"PostgreSQL/Redis not available: {exc}")

    def cleanup() -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    env = {
        "DATABASE_URL": f"{base}/{name}",
        "REDIS_URL": "redis://127.0.0.1:6379/7",
        "GRANIAN_WORKERS": "3",
        "GENERATION_SIM_DIR": str(workdir / "simulator"),
        "STORAGE_URL": f"file://{workdir / 'storage'}",
    }
    return env, cleanup


def app_env(workdir: Path, port: int, scaled: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `make run` for a test app: its own database, outbox and storage."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env.update(
        APP_PORT=str(port),
        APP_URL=f"http://localhost:{port}",
        APP_HOST="127.0.0.1",
        DATABASE_URL=f"sqlite:///{workdir / 'vgen.db'}",
        MAIL_OUTBOX_DIR=str(workdir / "outbox"),
        BCRYPT_ROUNDS="4",
        # The journeys count activation mails: no "one link mail per minute" throttle here.
        MAIL_LINK_INTERVAL_SECONDS="0",
        # Every journey signs up its own users from 127.0.0.1: more than an hour's sign-up limit.
        SIGNUPS_PER_IP_PER_HOUR="10000",
        PYTHONUNBUFFERED="1",
        STORAGE_URL=f"file://{workdir / 'storage'}",
        GENERATION_SIM_DIR=str(workdir / "simulator"),
        # Its own frontend build folder: a developer's running `make run`/`make dev` keeps its .web
        # (VGEN_TEST_WEB_WORKDIR: another one, for a second test run at the same time).
        REFLEX_WEB_WORKDIR=os.environ.get("VGEN_TEST_WEB_WORKDIR", str(ROOT / ".web-test")),
    )
    env.update(scaled or {})
    return env


def start_app(workdir: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen, RunningApp]:
    """`make run` in its own process group; returns once it answers (or fails the test)."""
    log_path = workdir / f"app-{int(time.time() * 1000)}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - the process owns it; closed with the group
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, killed as a whole
    )
    log_file.close()
    app = RunningApp(
        url=env["APP_URL"],
        outbox=Path(env["MAIL_OUTBOX_DIR"]),
        log=log_path,
        workdir=workdir,
        pgid=proc.pid,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(
                f"`make run` exited with {proc.returncode} before answering.\n"
                f"--- {log_path} (tail) ---\n{app.log_tail()}",
                pytrace=False,
            )
        if _answers(f"http://127.0.0.1:{port}/ping") and _answers(f"http://localhost:{port}/"):
            return proc, app
        if time.monotonic() > deadline:
            _kill_group(proc)
            pytest.fail(
                f"`make run` did not answer GET /ping on port {port} within "
                f"{START_TIMEOUT_S} s.\n--- {log_path} (tail) ---\n{app.log_tail()}",
                pytrace=False,
            )
        time.sleep(0.5)


@pytest.fixture(scope="session", params=["sqlite-1-worker", "postgres-redis-3-workers"])
def app_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningApp]:
    """The app as `make run` starts it: on the embedded defaults (SQLite, one worker), and in the
    production shape (PostgreSQL + Redis, three workers)."""
    workdir = tmp_path_factory.mktemp("browser-app")
    scaled, cleanup = ({}, None)
    if request.param == "postgres-redis-3-workers":
        scaled, cleanup = _scaled_env(workdir)
    port = _free_port()
    proc, app = start_app(workdir, port, app_env(workdir, port, scaled))
    try:
        yield app
    finally:
        _kill_group(proc)
        if cleanup is not None:
            cleanup()


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's `chromium` package "
            "(the journeys never download a browser with `playwright install`).",
            pytrace=False,
        )
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=20_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield WatchedBrowser(browser)
        finally:
            browser.close()


# --- Content-Security-Policy violations: none in any journey --------------------------------------

# Every context any test makes (through `browser`, `new_context` or a helper) reports each
# `securitypolicyviolation` of its pages to Python, and Chromium's console lines about a refused
# load or an unparsable header are kept too (they survive a page that navigates away at once).
CSP_PROBLEMS: list[str] = []
_CSP_BINDING = "__vgenCspViolation"
_CSP_WATCH = f"""
document.addEventListener('securitypolicyviolation', (e) => {{
  const report = window.{_CSP_BINDING};
  if (typeof report === 'function') report({{
    directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample,
    source: `${{e.sourceFile}}:${{e.lineNumber}}`, page: document.location.href,
  }});
}}, true);
"""
_CONSOLE_PROBLEMS = (
    "Refused to",
    "Content Security Policy",
    "Content-Security-Policy",
    "Error with Permissions-Policy header",
)


def _report_violation(_source, v: dict) -> None:
    CSP_PROBLEMS.append(
        f"CSP violation: directive {v.get('directive')!r}, blocked {v.get('blocked')!r} "
        f"(sample {v.get('sample')!r}) at {v.get('source')} on {v.get('page')}"
    )


def _console(message) -> None:
    text = message.text
    if any(marker in text for marker in _CONSOLE_PROBLEMS):
        CSP_PROBLEMS.append(f"console {message.type}: {text} (at {message.location.get('url')})")


def watch_csp(context):
    """Record CSP violations of every page of this context (see CSP_PROBLEMS)."""
    context.expose_binding(_CSP_BINDING, _report_violation)
    context.add_init_script(_CSP_WATCH)
    context.on("console", _console)
    return context


class WatchedBrowser:
    """The session's Chromium: every context it makes watches for CSP violations."""

    def __init__(self, browser) -> None:
        self._browser = browser

    def new_context(self, **options):
        return watch_csp(self._browser.new_context(**options))

    def new_page(self, **options):
        context = self.new_context(**options)
        page = context.new_page()
        page.once("close", lambda _page: context.close())
        return page

    def __getattr__(self, name: str):
        return getattr(self._browser, name)


def take_csp_problems() -> list[str]:
    """What was recorded so far (and forget it)."""
    problems, CSP_PROBLEMS[:] = list(CSP_PROBLEMS), []
    return problems


@pytest.fixture(autouse=True)
def no_csp_violations() -> Iterator[None]:
    """After each browser test (its contexts closed): no page broke the Content-Security-Policy
    (or sent a Permissions-Policy Chromium cannot parse). Not cleared before the test: what a
    module or session fixture's pages did while being set up (before this one) counts here too."""
    yield
    problems = take_csp_problems()
    assert not problems, "\n".join(problems)


@pytest.fixture
def csp_problems() -> list[str]:
    """The list the watchers append to (this module's own, however a test module imports us)."""
    return CSP_PROBLEMS


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """What pages did after the last test (a module fixture's teardown) fails the run too."""
    problems = take_csp_problems()
    if problems:
        print("\nContent-Security-Policy problems after the last test:\n" + "\n".join(problems))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def new_context(browser, app_server: RunningApp):
    """A factory of fresh browser contexts (separate cookie jars), closed after the test."""
    contexts = []

    def make(**options):
        options.setdefault("viewport", {"width": 1200, "height": 800})
        ctx = browser.new_context(base_url=app_server.url, **options)
        ctx.set_default_timeout(20_000)
        ctx.set_default_navigation_timeout(30_000)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest):
    """`shots(page, "name")` saves a full-page screenshot under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    prefix = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    counter = iter(range(1, 100))

    def shot(page, name: str) -> Path:
        path = ARTIFACTS / f"{prefix}-{next(counter):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shot
