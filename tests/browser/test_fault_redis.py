"""Issue O: Redis restarted under open pages, in the production shape (PostgreSQL, Redis, 3 Granian
workers). Redis here is a private `redis-server` on a free port without persistence, killed and
started again on the same port: every tab's Reflex state is gone with it. The open pages — My
tasks and a task page, signed in — keep working with their session (the HttpOnly cookie of their
socket), without a reload; nothing in the database is lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import _free_port, _kill_group, app_env, start_app
from journey_helpers import create_task, new_member
from playwright.sync_api import expect

pytestmark = pytest.mark.browser
DOWN_S = 3.0


class RedisServer:
    """`redis-server` on its own port, no persistence: a restart loses everything."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
            + ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not self.answers():
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def fresh_pg_database() -> Iterator[str]:
    """A database of its own on the local PostgreSQL (dropped at the end)."""
    from tests.conftest import PG_ADMIN_DSN, REQUIRE_PG

    name = f"vgen_redisfault_{os.getpid()}"
    try:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    try:
        yield f"{PG_ADMIN_DSN.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_redis_restarted_under_open_pages_they_keep_their_session(
    browser, private_redis: RedisServer, fresh_pg_database: str, tmp_path: Path, shots, figure
) -> None:
    workdir = tmp_path / "app"
    workdir.mkdir()
    port = _free_port()
    env = app_env(
        workdir,
        port,
        {
            "DATABASE_URL": fresh_pg_database,
            "REDIS_URL": private_redis.url,
            "GRANIAN_WORKERS": "3",
        },
    )
    proc, app = start_app(workdir, port, env)
    context = browser.new_context(base_url=app.url, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(20_000)
    try:
        home = context.new_page()
        email = new_member(home, app)
        alpha = create_task(home, "Alpha clip")
        create_task(home, "Beta clip")
        home.goto("/")
        table = home.locator("#tasks-table")
        expect(table).to_contain_text("Alpha clip")
        expect(table).to_contain_text("Beta clip")
        task = context.new_page()
        task.goto(alpha)
        expect(task.locator("#task-name")).to_have_text("Alpha clip")
        loads: list[str] = []
        for page in (home, task):
            page.evaluate("window.__vgenMarker = 'before the restart'")
            page.on("load", lambda p: loads.append(p.url))

        private_redis.kill()  # every tab's state goes with it
        killed = time.monotonic()
        time.sleep(DOWN_S)
        private_redis.start()  # the same port, empty
        back = time.monotonic()

        # The first click on each open page after the restart (its state is gone: Reflex builds
        # a new one, the page's on_load reads the session cookie again) does what it says.
        home.fill("#task-search", "Beta")
        expect(table).not_to_contain_text("Alpha clip", timeout=60_000)
        expect(table).to_contain_text("Beta clip")
        recovered_s = time.monotonic() - back
        task.click("#rename-task")
        expect(task.locator("#rename-input")).to_be_visible()
        task.fill("#rename-input", "Alpha renamed")
        task.click("#rename-save")
        expect(task.locator("#task-name")).to_have_text("Alpha renamed", timeout=60_000)
        renamed_s = time.monotonic() - back
        task.wait_for_timeout(2_000)  # and it stays so: nothing reloads the page's old answers
        expect(home.locator("#task-search")).to_have_value("Beta")
        expect(table).not_to_contain_text("Alpha")
        expect(table).to_contain_text("Beta clip")
        expect(task.locator("#task-name")).to_have_text("Alpha renamed")
        for page in (home, task):  # still signed in, as the same user
            expect(page.locator("#header-email")).to_have_text(email)
            expect(page.locator("#connection-lost")).to_have_count(0)
        shots(task, "after-redis-restart")
        for page in (home, task):
            assert page.evaluate("window.__vgenMarker") == "before the restart"
        assert loads == [], loads
    finally:
        context.close()
        _kill_group(proc)

    with psycopg.connect(fresh_pg_database) as conn:
        names = sorted(r[0] for r in conn.execute("SELECT name FROM tasks"))
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        sessions = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
    assert names == ["Alpha renamed", "Beta clip"]
    assert users == 1 and sessions >= 1
    figure(
        f"PostgreSQL + private Redis + 3 Granian workers: Redis killed -9 and started again"
        f" empty on its port ({DOWN_S:.0f} s down, {back - killed:.1f} s with the start) under"
        f" two open signed-in pages (My tasks, a task; their Reflex state lost): the first click"
        f" on each after it was back did its work — a search answered {recovered_s:.1f} s after"
        f" Redis was back, a rename (Rename, type, Save) done at {renamed_s:.1f} s — both pages"
        f" still signed in as the user (the session cookie read again), 0 reloads; nothing lost"
        f" in the database (2 tasks, the rename kept)"
    )
