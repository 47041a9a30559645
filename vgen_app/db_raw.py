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


class RawReader:
    """A `Session` stand-in for `@raw_read` services: their statements on the pool's DBAPI
    connection, in one read transaction (SQLite: a deferred `BEGIN`, so it never waits for
    the write lock), ended by `commit()`; a statement after that starts the next one, which
    the next `commit()` ends (`sessions.validate` ends its read, then touches the session)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._sqlite = engine.dialect.name == "sqlite"
        self._raw = engine.raw_connection()
        self._conn = self._raw.driver_connection
        self._open = False
        self._begin()

    # --- the Session surface the services use ---
    def connection(self) -> RawReader:
        return self

    def execute(self, statement: ClauseElement, params: dict[str, Any] | None = None) -> Result:
        c = compiled(statement, self._dialect)
        sql, args = c.arguments(params or {})
        if not self._open:
            self._begin()
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
        self._open = False
        try:
            if self._sqlite:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")
            else:
                self._conn.commit()
        except self._dialect.loaded_dbapi.Error as e:
            self._failed(e, "COMMIT", (), None)

    def close(self) -> None:
        if self._raw is None:
            return
        try:
            if self._open and self._sqlite and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except self._dialect.loaded_dbapi.Error:
            self._raw.invalidate()
        finally:
            self._raw.close()  # back to the pool (which rolls back anything left open)
            self._raw = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ---
    def _begin(self) -> None:
        if self._sqlite:
            try:
                self._conn.execute("BEGIN")
            except self._dialect.loaded_dbapi.Error as e:
                self._failed(e, "BEGIN", (), None)
        self._open = True

    def _failed(self, e: Exception, sql: str, args: Any, cursor: Any) -> None:
        """Raise as SQLAlchemy would: its exception class for the DBAPI error; a dropped
        connection is thrown away instead of going back to the pool."""
        self._open = False
        if self._dialect.is_disconnect(e, self._raw, cursor):
            self._raw.invalidate()
        raise DBAPIError.instance(
            sql, args, e, self._dialect.loaded_dbapi.Error, dialect=self._dialect
        ) from e
