"""A local fake of Cloudflare D1's HTTP query API, backed by sqlite3 (one file, one connection).

`POST /client/v4/accounts/{account}/d1/database/{db}/query` and `.../raw` take `{"sql", "params"}`
or `{"batch": [{"sql", "params"}, ...]}`; a request is one implicit transaction (all or nothing),
requests are serialized. `/query` rows are objects, `/raw` rows are arrays with `columns`. Like D1,
it refuses BEGIN/COMMIT/ROLLBACK/SAVEPOINT: there is no transaction across requests.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

_PATH = re.compile(r"^/client/v4/accounts/([^/]+)/d1/database/([^/]+)/(query|raw)$")
_TXN = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


class _Quiet(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the dialect's httpx client expects

    def log(self, *args: Any) -> None:
        pass


class FakeD1:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA foreign_keys=ON")  # D1 enforces foreign keys
        self.db.execute("PRAGMA synchronous=OFF")  # a test double: no fsync per request
        self.lock = threading.Lock()
        self.log: list[str] = []  # every statement received, in order
        self.calls: list[str] = []  # endpoint of each request: query | raw
        self.requests: list[tuple[str, list[str]]] = []  # (endpoint, its statements) per request
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True, request_handler=_Quiet)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/client/v4/accounts/acct/d1/database/db"

    def url(self, token: str = "tok") -> str:
        """The SQLAlchemy URL: cloudflare_d1://{account_id}:{api_token}@{database_id}?base_url=…"""
        return f"cloudflare_d1://acct:{token}@db?base_url={self.base}"

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)
        self.db.close()

    def run(self, queries: list[dict[str, Any]]) -> list[tuple[list[str], list[list], dict]]:
        """Execute statements atomically; (columns, rows, meta) per statement, or raise."""
        out = []
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for q in queries:
                    sql, params = q["sql"], q.get("params") or []
                    self.log.append(sql)
                    if _TXN.match(sql):
                        raise sqlite3.OperationalError(
                            "To execute a transaction, please use the state.storage.transaction()"
                            " or state.storage.transactionSync() APIs instead of the SQL BEGIN"
                            " TRANSACTION or SAVEPOINT statements."
                        )
                    before = self.db.total_changes
                    cur = self.db.execute(sql, params)
                    rows = [[list(v) if isinstance(v, bytes) else v for v in r] for r in cur]
                    cols = [d[0] for d in cur.description or []]
                    changes = self.db.total_changes - before
                    (last_id,) = self.db.execute("SELECT last_insert_rowid()").fetchone()
                    meta = {"changes": changes, "last_row_id": last_id, "changed_db": changes > 0}
                    meta.update(rows_read=len(rows), rows_written=changes, duration=0.1)
                    out.append((cols, rows, meta))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return out

    def _app(self, environ: dict, start_response: Any) -> Any:
        request = Request(environ)
        match = _PATH.match(request.path)
        if request.method != "POST" or not match:
            return Response("not found", 404)(environ, start_response)
        endpoint = match.group(3)
        self.calls.append(endpoint)
        body = request.get_json(force=True)
        queries = body.get("batch", [body])
        self.requests.append((endpoint, [q.get("sql", "") for q in queries]))
        try:
            results = self.run(queries)
        except sqlite3.Error as exc:  # D1's shape: HTTP 400, code 7500, SQLite's message
            kind = "CONSTRAINT" if isinstance(exc, sqlite3.IntegrityError) else "ERROR"
            error = {"code": 7500, "message": f"{exc}: SQLITE_{kind}"}
            payload = {"result": [], "success": False, "errors": [error], "messages": []}
            return _json(payload, 400)(environ, start_response)
        result = [
            {
                "results": {"columns": cols, "rows": rows}
                if endpoint == "raw"
                else [dict(zip(cols, r, strict=True)) for r in rows],
                "success": True,
                "meta": meta,
            }
            for cols, rows, meta in results
        ]
        payload = {"result": result, "success": True, "errors": [], "messages": []}
        return _json(payload, 200)(environ, start_response)


def _json(payload: dict, status: int) -> Response:
    return Response(json.dumps(payload), status, mimetype="application/json")
