"""Engine and sessions. Services take a `Session`; callers on the event loop use `run_db`."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, ParamSpec, TypeVar

from sqlalchemy import JSON, String, event, literal
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Executable
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session, create_engine

from vgen_app import cpu
from vgen_app.config import get_settings
from vgen_app.db_raw import RawReader, hold_connections

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("vgen.db")

_engines: dict[str, Engine] = {}

# Database work runs on a pool of its own (not asyncio's default one, which bcrypt and file I/O
# share): as many threads as the connection pool has connections.
DB_THREADS = 30
# On SQLite, `@read_only` services run on threads of their own, only a few: sqlite3 lets go of the
# GIL around every call, so each extra thread in a burst adds hand-offs that cost more CPU than
# the reads (200 dashboard reads at once: 2.3 ms of CPU each on 30 threads, 1.0 ms on 2; 0.7 ms
# one after the other). A read takes no lock in WAL mode, so writers never hold these threads up.
READ_THREADS_SQLITE = 2
# Set while a service marked @read_only runs: on SQLite its transaction starts with a plain
# (deferred) BEGIN, so readers never queue behind the write lock.
_read_only: contextvars.ContextVar[bool] = contextvars.ContextVar("vgen_read_only", default=False)

D1 = "cloudflare_d1"

# The database cannot be reached or dropped the connection (a restart, a failover, a full pool of
# dead connections): the call may be tried again. Routes answer 503 (api/errors.py), so Stripe
# retries a webhook; pages say UNAVAILABLE. Every later call gets a fresh connection (pre-ping).
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError)
UNAVAILABLE = "vgen cannot reach its database just now. Please try again in a minute."


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` mean psycopg 3 here."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # A local file cannot go stale: no pre-ping (it was 7 % of a busy worker's time).
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_pre_ping=False,
            pool_size=10,
            # every database thread at once, the writer, and the readers' kept connections
            max_overflow=DB_THREADS - 10 + 1 + READ_THREADS_SQLITE,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite's own transaction handling would defer BEGIN; we issue BEGIN IMMEDIATE
            # ourselves so that concurrent writers queue on the lock instead of failing.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers take the lock up front (BEGIN IMMEDIATE) and queue on it; a read-only
            # service reads a WAL snapshot without waiting for any writer.
            conn.exec_driver_sql("BEGIN" if _read_only.get() else "BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == D1:
        # Cloudflare D1 over HTTP (docs/d1.md): a "connection" has no state to ping, and every
        # statement commits on its own, so multi-statement writes go through `run_batch`.
        engine = create_engine(url, pool_pre_ping=False)

        @event.listens_for(engine, "handle_error")
        def _d1_integrity(ctx: Any) -> None:
            # The dialect raises every D1 error as OperationalError; give constraint failures the
            # IntegrityError that SQLite and psycopg raise (and our services catch).
            if "constraint failed" in str(ctx.original_exception):
                raise IntegrityError(
                    ctx.statement, ctx.parameters, ctx.original_exception
                ) from ctx.original_exception

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=DB_THREADS - 10)


def get_engine() -> Engine:
    url = get_settings().database_url
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = make_engine(url)
    return engine


def dispose_engines() -> None:
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session; services commit their own transactions, anything left open is rolled back."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
        finally:
            session.rollback()


def one_writer(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a short write (one batch, nothing slow inside its transaction): on SQLite, `run_db`
    runs these one at a time on a thread of their own, so concurrent ones queue in order instead
    of retrying for SQLite's write lock (its busy handler sleeps up to 100 ms between tries,
    which made a burst of admin PUTs wait seconds at p99). On PostgreSQL they run like any other.
    Never put anything slow in one (bcrypt, HTTP): it would hold up every other."""
    fn.one_writer = True  # type: ignore[attr-defined]
    return fn


def read_only(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a service that only reads (it may still end its read and then write, as
    `sessions.validate` does): on SQLite it then never waits for the write lock to read."""
    fn.read_only = True  # type: ignore[attr-defined]
    return fn


def raw_read(fn: Callable[P, T]) -> Callable[P, T]:
    """Mark a `@read_only` service that touches its session only through
    `db.connection().execute(<prebuilt Core statement>, params)` (rows read by position or
    column name, `.first()`, `.all()`, `.scalar_one()`) and `end_read(db)`: `with_db` then runs
    it on the raw DBAPI connection (vgen_app/db_raw.py: ~4 µs instead of ~110 µs of Python per
    statement) on SQLite and PostgreSQL. Called with a `Session`, it works the same."""
    fn.read_only = True  # type: ignore[attr-defined]
    fn.raw_read = True  # type: ignore[attr-defined]
    return fn


_RAW_DIALECTS = ("sqlite", "postgresql")


def with_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if getattr(fn, "raw_read", False):
        engine = get_engine()
        if engine.dialect.name in _RAW_DIALECTS:
            with RawReader(engine) as reader:
                return fn(reader, *args, **kwargs)
    token = _read_only.set(bool(getattr(fn, "read_only", False)))
    try:
        with session_scope() as session:
            return fn(session, *args, **kwargs)
    finally:
        _read_only.reset(token)


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _db_pool() -> ThreadPoolExecutor:
    """This process's database threads (made after a fork, never inherited across one)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(
                    DB_THREADS, thread_name_prefix="vgen-db", initializer=cpu.join_loop_core
                ),
            )
        return _pool[1]


_readers: tuple[int, ThreadPoolExecutor] | None = None


def _reader_start() -> None:
    cpu.join_loop_core()  # on the event loop's core (vgen_app/cpu.py)
    hold_connections()  # each keeps its connection (db_raw.py)


def _reader_pool() -> ThreadPoolExecutor:
    """This process's threads for `@read_only` services on SQLite."""
    global _readers
    with _pool_lock:
        if _readers is None or _readers[0] != os.getpid():
            _readers = (
                os.getpid(),
                ThreadPoolExecutor(
                    READ_THREADS_SQLITE,
                    thread_name_prefix="vgen-db-read",
                    initializer=_reader_start,
                ),
            )
        return _readers[1]


_writer: tuple[int, ThreadPoolExecutor] | None = None


def _writer_pool() -> ThreadPoolExecutor:
    """This process's one thread for `@one_writer` services on SQLite."""
    global _writer
    with _pool_lock:
        if _writer is None or _writer[0] != os.getpid():
            _writer = (
                os.getpid(),
                ThreadPoolExecutor(
                    1, thread_name_prefix="vgen-db-writer", initializer=cpu.join_loop_core
                ),
            )
        return _writer[1]


def _pool_for(fn: Callable[..., Any]) -> ThreadPoolExecutor:
    """`@one_writer` services on SQLite: the one writer thread, in order; `@read_only` ones: the
    few reader threads; anything else (and everything on PostgreSQL): the database threads."""
    if get_engine().dialect.name == "sqlite":
        if getattr(fn, "one_writer", False):
            return _writer_pool()
        if getattr(fn, "read_only", False):
            return _reader_pool()
    return _db_pool()


async def run_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(session, *args)` on a database thread: database work never blocks the event loop."""
    call = functools.partial(contextvars.copy_context().run, with_db, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_pool_for(fn), call)


def run_db_later(fn: Callable[..., T], *args: Any) -> Future[T]:
    """Queue `fn(session, *args)` on the database threads and return at once, from any thread:
    for work nobody waits for (the sessions' last-seen stamps). A failure is logged."""
    future = _pool_for(fn).submit(contextvars.copy_context().run, with_db, fn, *args)
    future.add_done_callback(_log_failure)
    return future


def _log_failure(future: Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        log.error("background database work failed: %r", exc, exc_info=exc)


def end_read(session: Session) -> None:
    """End a read-only transaction, keeping loaded objects usable (commit expires nothing here,
    unlike rollback). On SQLite this also releases the lock before slow work (bcrypt, HTTP)."""
    session.commit()


# --- batches: one definition, run in a transaction or as one Cloudflare D1 request -------------


def is_d1(bind: Session | Engine | Connection) -> bool:
    """True when this session/engine talks to Cloudflare D1 (no transaction spans two requests)."""
    engine = bind.get_bind() if isinstance(bind, Session) else bind
    return engine.dialect.name == D1


class json_object(FunctionElement):
    """A JSON object built in SQL from alternating keys and values: `json_object` on SQLite and
    D1, `json_build_object` on PostgreSQL. Lets a batch write an analytics row from values
    another statement of the same batch computed."""

    type = JSON()
    name = "json_object"
    inherit_cache = True


@compiles(json_object)
def _json_object(element: json_object, compiler: Any, **kw: Any) -> str:
    return f"json_object({compiler.process(element.clauses, **kw)})"


@compiles(json_object, "postgresql")
def _json_object_pg(element: json_object, compiler: Any, **kw: Any) -> str:
    return f"json_build_object({compiler.process(element.clauses, **kw)})"


def json_pairs(**values: Any) -> json_object:
    """`json_object('k1', v1, 'k2', v2, …)` for SQL expressions or plain values."""
    args: list[Any] = []
    for key, value in values.items():
        args += [literal(key, String()), value]
    return json_object(*args)


class Bound(NamedTuple):
    """A statement built once with named `bindparam`s, and this run's values for them: a batch
    statement that costs no statement construction (SQLAlchemy's compiled cache finds it)."""

    statement: Executable
    params: dict[str, Any]


@dataclass
class Batch:
    """Statements that are correct when run one after another with no result read in between
    (each guarded in SQL: `INSERT … SELECT … WHERE`, `UPDATE … WHERE`), so the same list runs in
    one transaction on SQLite and PostgreSQL and as one all-or-nothing request on D1. A statement
    may be named to read its RETURNING rows afterwards: `Batch.rows(results, name)`."""

    statements: list[Executable | Bound] = field(default_factory=list)
    names: dict[str, int] = field(default_factory=dict)

    def add(self, statement: Executable | Bound, name: str | None = None) -> None:
        if name is not None:
            if name in self.names:
                raise ValueError(f"two statements named {name!r}")
            self.names[name] = len(self.statements)
        self.statements.append(statement)

    def rows(self, results: Sequence[list[dict[str, Any]]], name: str) -> list[dict[str, Any]]:
        return results[self.names[name]]


def run_batch(db: Session, statements: Sequence[Executable | Bound]) -> list[list[dict[str, Any]]]:
    """Run statements all or nothing; each one's RETURNING rows (as dicts).

    SQLite/PostgreSQL: in the session's transaction (the caller commits; on failure it rolls
    back). D1: one `/query` batch, which D1 runs as its own transaction, over the dialect's own
    HTTP client and credentials. This is the only place that knows which of the two it is."""
    conn = db.connection()
    dialect = conn.dialect
    if not is_d1(conn):
        out = []
        for stmt in statements:
            if isinstance(stmt, Bound):
                result = conn.execute(stmt.statement, stmt.params)
            else:  # fetched at once: SQLite sets changes() when one ends
                result = conn.execute(stmt)
            out.append([dict(r) for r in result.mappings()] if result.returns_rows else [])
        return out
    batch = []
    for stmt in statements:
        given = stmt.params if isinstance(stmt, Bound) else None
        stmt = stmt.statement if isinstance(stmt, Bound) else stmt
        # Expanding parameters (`IN (…)`) rendered as one `?` per value: `status_1` → `status_1_1`…
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        values = compiled.construct_params(given)
        params = []
        for name in compiled.positiontup or []:
            bind = compiled.binds.get(name)
            if bind is None:
                bind = compiled.binds[name.rsplit("_", 1)[0]]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            params.append(proc(values[name]) if proc else values[name])
        batch.append({"sql": compiled.string, "params": params})
    raw = conn.connection.dbapi_connection  # sqlalchemy_cloudflare_d1.Connection
    response = raw.client.post(f"{raw.base_url}/query", json={"batch": batch})
    try:
        body = response.json()
    except ValueError:  # not D1's JSON envelope (a proxy's error page, say)
        body = {"errors": [{"message": f"HTTP {response.status_code}: {response.text[:200]}"}]}
    if not body.get("success"):
        message = "; ".join(e.get("message", "") for e in body.get("errors") or [])
        cls = IntegrityError if "constraint failed" in message else OperationalError
        raise cls(batch[0]["sql"], None, Exception(message))
    return [r.get("results") or [] for r in body["result"]]


def refresh_loaded(db: Session, model: type, *ids: Any) -> None:
    """After a batch (Core statements bypass the ORM): reload those of these rows the session
    holds, as the ORM's own UPDATE would have synchronized them."""
    for ident in ids:
        obj = db.identity_map.get(Session.identity_key(model, ident))
        if obj is not None:
            db.refresh(obj)
