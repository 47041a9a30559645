"""Shared helpers for bench/token_debits.py and bench/admin_api.py (loopback only, bounded)."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("BCRYPT_ROUNDS", "4")

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def temp_sqlite_url(tag: str) -> str:
    folder = Path(tempfile.mkdtemp(prefix=f"vgen-bench-{tag}-"))
    return f"sqlite:///{folder / 'bench.db'}"


def use_database(url: str) -> None:
    """Point the app (settings + engines) at `url`."""
    from vgen_app.config import reset_settings
    from vgen_app.db import dispose_engines

    dispose_engines()
    os.environ["DATABASE_URL"] = url
    reset_settings()


def migrated(url: str) -> str:
    from vgen_app.cli import migrate

    migrate(url)
    return url


@contextlib.contextmanager
def temp_postgres() -> Iterator[str]:
    """A fresh database `vgen_bench_<pid>` on the local PostgreSQL, dropped afterwards."""
    import psycopg

    name = f"vgen_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        from vgen_app.db import dispose_engines

        dispose_engines()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
