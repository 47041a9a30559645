"""Hot reads on the raw DBAPI connection: the same Core statements, without SQLAlchemy's per-call
machinery.

A read through an ORM `Session` pays ~110 µs of Python before SQLite does anything (session,
connection checkout, transaction events, execution context, result object); the same `SELECT`
on the sqlite3 connection costs ~4 µs. The UI's hot events (the session check with each page's
read: My tasks, a task, Tokens) are a few small statements each, so SQLAlchemy was most of their
CPU (BENCHMARKS.md, note 1). `RawReader` runs those services' statements on the pool's own DBAPI
connection: each Core statement is compiled once per dialect by SQLAlchemy itself (its SQL, its
bind order, the bind and result type processors of its columns), then executed with the plain
cursor; rows come back as named tuples with the same values and attribute names a Core row has.

It quacks like the part of a `Session` those services use (`connection().execute(statement,
params)` with `.first()`, `.all()`, `.scalar_one()` or iteration, and `commit()` to end the
read), so the same service runs on either: `db.with_db` gives a `@raw_read` service a
`RawReader` on SQLite and PostgreSQL, a `Session` everywhere else (Cloudflare D1). Errors are
raised as SQLAlchemy's own (`OperationalError` & co.), and a dropped connection is invalidated,
just as through the engine.
"""

from __future__ import annotations

import contextlib
import threading
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

_POSTCOMPILE = "__[POSTCOMPILE_{}]"


class _Compiled:
    """One statement compiled for one dialect, with what a call needs to run it."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        self.writes = bool(compiled.isinsert or compiled.isupdate or compiled.isdelete)
        self.positional = bool(compiled.positional)
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        order = list(compiled.positiontup or by_name)
        # (name in the SQL, key in the caller's params, bind processor, default, expanding)
        self.binds: list[tuple[str, str, Callable[[Any], Any] | None, Any, bool]] = []
        for name in order:
            bind = by_name[name]
            processor = bind.type._cached_bind_processor(dialect)
            self.binds.append((name, bind.key, processor, bind.value, bool(bind.expanding)))
        self.expanding = any(b[4] for b in self.binds)
        columns = compiled._result_columns  # (keyname, name, objects, type) per column
        self._types = [col[3] for col in columns]
        self._dialect = dialect
        # The result processors need the driver's type codes (PostgreSQL's numeric OIDs): made
        # from the first execution's cursor description, the same for every later one.
        self.processors: list[Callable[[Any], Any] | None] | None = None
        self.any_processor = False
        self.row = namedtuple("Row", [col[0] for col in columns], rename=True) if columns else None

    def arguments(self, params: dict[str, Any]) -> tuple[str, Sequence[Any] | dict[str, Any]]:
        sql = self.sql
        if self.positional:
            args: list[Any] = []
            for name, key, processor, default, expanding in self.binds:
                value = params.get(key, default)
                if expanding:
                    values = [processor(v) if processor else v for v in value]
                    sql = sql.replace(_POSTCOMPILE.format(name), ", ".join("?" * len(values)))
                    args.extend(values)
                else:
                    args.append(processor(value) if processor else value)
            return sql, args
        named: dict[str, Any] = {}
        for name, key, processor, default, expanding in self.binds:
            value = params.get(key, default)
            if expanding:
                names = [f"{name}_{i}" for i in range(len(value))]
                sql = sql.replace(_POSTCOMPILE.format(name), ", ".join(f"%({n})s" for n in names))
                for n, v in zip(names, value, strict=True):
                    named[n] = processor(v) if processor else v
            else:
                named[name] = processor(value) if processor else value
        return sql, named

    def rows(self, fetched: list[tuple], description: Sequence[Any]) -> list[Any]:
        if self.row is None:
            return fetched
        if self.processors is None:
            self.processors = [
                t._cached_result_processor(self._dialect, d[1])
                for t, d in zip(self._types, description, strict=True)
            ]
            self.any_processor = any(p is not None for p in self.processors)
        if self.any_processor:
            procs = self.processors
            fetched = [
                tuple(p(v) if p is not None else v for p, v in zip(procs, raw, strict=True))
                for raw in fetched
            ]
        make = self.row._make
        return [make(r) for r in fetched]


class Result:
    """The rows of one statement, read in full (these reads are all bounded)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        if len(self._rows) != 1:
            raise ValueError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]


# Prebuilt statements only (module constants, lru_cached builders): a few dozen in all.
_MAX_STATEMENTS = 512
_compiled: dict[tuple[int, str], _Compiled] = {}
_compiled_lock = threading.Lock()


def compiled(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    key = (id(statement), dialect.name)
    found = _compiled.get(key)
    if found is None:
        found = _Compiled(statement, dialect)
        if len(_compiled) >= _MAX_STATEMENTS:  # a statement built per call: not kept
            return found
        with _compiled_lock:
            # keyed by id: the statement is kept alive with its compiled form
            _compiled[key] = found
            _keep.append(statement)
    return found


_keep: list[ClauseElement] = []


# SQLite's reader threads (db.py's `vgen-db-read` pool) each keep one connection checked out of
# the engine's pool for good: a checkout and return through the pool cost ~11 µs of Python in a
# tight loop but ~180 µs in an event after the server sat idle for a moment (cold caches), more
# than the reads themselves (BENCHMARKS.md, note 1). A local file cannot go stale; a connection
# that failed is invalidated and the next read takes a new one.
_held = threading.local()


def hold_connections() -> None:
    """Make this thread keep its raw connection between `RawReader`s (the SQLite reader pool's
    initializer)."""
    _held.on = True


class RawReader:
    """A `Session` stand-in for `@raw_read` services: their statements on the pool's DBAPI
    connection.

    On SQLite each read runs on its own (autocommit: a consistent snapshot per statement, never
    waiting for the write lock, no `BEGIN`/`COMMIT` round of its own); a write (`validate`
    touching the session) opens a `BEGIN IMMEDIATE` transaction that `commit()` ends. On
    PostgreSQL the driver opens the transaction; a `commit()` with nothing written only marks
    the read as ended: a next read goes on in it (one round trip fewer), a next write first
    really ends it. `close()` rolls back whatever is still open."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._sqlite = engine.dialect.name == "sqlite"
        self._keep = self._sqlite and getattr(_held, "on", False)
        self._raw = self._checkout()
        self._conn = self._raw.driver_connection
        self._open = False  # a transaction is open
        self._ended = False  # ... and commit() ended it with nothing written (PostgreSQL)
        self._wrote = False  # ... and a statement in it wrote

    def _checkout(self) -> Any:
        if not self._keep:
            return self._engine.raw_connection()
        kept = getattr(_held, "conn", None)
        if kept is not None and kept[0] is self._engine and kept[1].is_valid:
            return kept[1]
        if kept is not None:  # another engine's (tests switch databases), or invalidated
            _held.conn = None
            with contextlib.suppress(Exception):  # a dead connection of a disposed pool
                kept[1].close()
        raw = self._engine.raw_connection()
        _held.conn = (self._engine, raw)
        return raw

    # --- the Session surface the services use ---
    def connection(self) -> RawReader:
        return self

    def execute(self, statement: ClauseElement, params: dict[str, Any] | None = None) -> Result:
        c = compiled(statement, self._dialect)
        sql, args = c.arguments(params or {})
        if c.writes:
            if self._ended:  # the read is over: the write starts a transaction anew
                self._end()
            if self._sqlite and not self._open:
                self._begin_write()
            self._wrote = True
        if not self._sqlite:
            self._open = True  # psycopg has begun one
        self._ended = False
        cursor = None
        try:
            cursor = self._conn.cursor()
            cursor.execute(sql, args)
            description = cursor.description
            fetched = cursor.fetchall() if description is not None else []
        except self._dialect.loaded_dbapi.Error as e:
            self._failed(e, sql, args, cursor)
            raise  # unreachable: _failed raises
        finally:
            if cursor is not None:
                try:
                    cursor.close()
                except self._dialect.loaded_dbapi.Error:
                    pass
        return Result(c.rows(fetched, description) if description is not None else [])

    def commit(self) -> None:
        if not self._open:
            return
        if self._wrote:
            self._end()
        else:
            self._ended = True

    def close(self) -> None:
        """End the reader: what is still open is rolled back (a read loses nothing by it; a
        write its service did not commit must not land), the connection goes back to the pool,
        or stays with this reader thread."""
        raw = self._raw
        if raw is None:
            return
        try:
            if self._sqlite and raw.is_valid and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")  # a write left uncommitted, or failed
        except self._dialect.loaded_dbapi.Error:
            raw.invalidate()
        finally:
            self._raw = None
            self._open = False
            if not self._keep or not raw.is_valid:
                if self._keep:
                    _held.conn = None
                raw.close()  # back to the pool (which rolls back anything left open)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---
    def _begin_write(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")  # as the engine's writers: queue on the lock
        except self._dialect.loaded_dbapi.Error as e:
            self._failed(e, "BEGIN IMMEDIATE", (), None)
        self._open = True

    def _end(self) -> None:
        """Commit the open transaction."""
        self._open = self._ended = self._wrote = False
        try:
            if self._sqlite:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
            else:
                self._conn.commit()
        except self._dialect.loaded_dbapi.Error as e:
            self._failed(e, "COMMIT", (), None)

    def _failed(self, e: Exception, sql: str, args: Any, cursor: Any) -> None:
        """Raise as SQLAlchemy would: its exception class for the DBAPI error; a dropped
        connection is thrown away instead of going back to the pool."""
        self._open = False
        if self._dialect.is_disconnect(e, self._raw, cursor):
            self._raw.invalidate()
        raise DBAPIError.instance(
            sql, args, e, self._dialect.loaded_dbapi.Error, dialect=self._dialect
        ) from e
