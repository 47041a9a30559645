"""Shared fixtures. Service tests run on SQLite and on the local PostgreSQL (`db` is parametrized);
the ledger, webhook and run tests (D1_MODULES) also on a fake Cloudflare D1 (tests/fakes/fake_d1.py).

The environment is set before the app is imported: a throw-away var folder, a cheap bcrypt.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="vgen-test-"))
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_TMP / 'app.db'}")
os.environ["MAIL_OUTBOX_DIR"] = str(_TMP / "outbox")
os.environ["BCRYPT_ROUNDS"] = "4"
os.environ.setdefault("REFLEX_STATE_MANAGER_MODE", "memory")
# In-process app tests build no frontend (.web is left alone); node 24 of the venv comes first.
# Reflex 0.10 reads its internal switch as `__REFLEX_SKIP_COMPILE`.
os.environ["__REFLEX_SKIP_COMPILE"] = "true"
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
for _var in ("RESEND_API_KEY", "ADMIN_TOKEN", "STRIPE_SECRET_KEY", "TRUSTED_PROXY_HOPS"):
    os.environ.pop(_var, None)

import psycopg
import pytest
from sqlalchemy import text
from sqlmodel import Session, SQLModel

from vgen_app import clock
from vgen_app import db as dbmod
from vgen_app.cli import migrate
from vgen_app.config import reset_settings

PG_ADMIN_DSN = os.environ.get("VGEN_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("CI") == "true" or os.environ.get("VGEN_REQUIRE_PG") == "1"


def _pg_available() -> bool:
    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="session")
def asgi_app() -> object:
    """The whole Reflex app (with its FastAPI sub-app) as an ASGI app, for Starlette's TestClient."""
    from vgen_app.vgen_app import app

    return app()


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small real media made with ffmpeg, once per test session."""
    from tests.fakes.media_samples import make_audio, make_image, make_video

    d = tmp_path_factory.mktemp("samples")
    return {
        "video": make_video(d / "clip.mp4", seconds=2),
        "long_video": make_video(d / "long.mp4", seconds=4),
        "audio": make_audio(d / "voice.m4a", seconds=3),
        "image": make_image(d / "face.png"),
    }


@pytest.fixture(scope="session")
def sqlite_url() -> str:
    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, files and all.
    url = f"sqlite:///{_TMP / 'vgen.db'}"
    migrate(url)
    return url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    if not _pg_available():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here but {PG_ADMIN_DSN} does not answer")
        pytest.skip("local PostgreSQL is not running")
    name = f"vgen_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    migrate(url)
    yield url
    dbmod.dispose_engines()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The modules whose tests also run on D1 (`[d1]`); elsewhere that variant is deselected.
D1_MODULES = {"test_ledger.py", "test_billing.py", "test_runs.py"}


@pytest.fixture(scope="session")
def fake_d1_url() -> Iterator[str]:
    """A fake Cloudflare D1 (HTTP API on sqlite3), migrated through the dialect like a real one."""
    pytest.importorskip("sqlalchemy_cloudflare_d1")
    from tests.fakes.fake_d1 import FakeD1

    fake = FakeD1(str(_TMP / "d1.sqlite"))
    try:
        url = fake.url()
        migrate(url)
        yield url
        dbmod.dispose_engines()
    finally:
        fake.close()


def _wipe(url: str) -> None:
    engine = dbmod.make_engine(url)
    tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "d1"])
def database_url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A migrated, empty database, selected as DATABASE_URL for the code under test."""
    fixture = {"sqlite": "sqlite_url", "postgres": "postgres_url", "d1": "fake_d1_url"}
    url = request.getfixturevalue(fixture[request.param])
    _wipe(url)
    monkeypatch.setenv("DATABASE_URL", url)
    reset_settings()
    yield url
    reset_settings()


@pytest.fixture
def db(database_url: str) -> Iterator[Session]:
    with dbmod.session_scope() as session:
        yield session


@pytest.fixture(autouse=True)
def _fresh_clock_and_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("MAIL_OUTBOX_DIR", str(tmp_path / "outbox"))
    reset_settings()
    clock.reset()
    yield
    clock.reset()
    reset_settings()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fast tests first; real-browser journeys last (Playwright's sync API holds an event loop on
    the main thread while it runs, which would break the asyncio-based tests after it).
    The `[d1]` variant runs only for D1_MODULES."""
    off_d1 = [
        item
        for item in items
        if getattr(item, "callspec", None) is not None
        and item.callspec.params.get("database_url") == "d1"
        and item.path.name not in D1_MODULES
    ]
    if off_d1:
        config.hook.pytest_deselected(items=off_d1)
        drop = {id(item) for item in off_d1}
        items[:] = [item for item in items if id(item) not in drop]
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture
def local_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Storage and the upload spool in this test's own folder (modules that store files use it
    for every test: `pytestmark = pytest.mark.usefixtures("local_storage")`)."""
    from vgen_app.adapters import storage as storage_mod

    root = tmp_path / "storage"
    monkeypatch.setenv("STORAGE_URL", f"file://{root}")
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "spool"))
    reset_settings()
    storage_mod._cache.clear()
    return root


# --- Figures: reliability and abuse scenarios print what they tried and what was lost ---------------
_FIGURES: list[tuple[str, str]] = []


@pytest.fixture
def figure(request: pytest.FixtureRequest):
    """`figure("what was tried … what was lost")` records one line for the terminal summary (and
    var/test-figures.txt), under the test's id — RELIABILITY.md quotes these lines."""

    def record(text: str) -> None:
        _FIGURES.append((request.node.nodeid, text))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("scenario figures")
    lines = [f"{nodeid}: {text}" for nodeid, text in _FIGURES]
    for line in lines:
        terminalreporter.write_line(line)
    out = Path(config.rootpath) / "var" / "test-figures.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
