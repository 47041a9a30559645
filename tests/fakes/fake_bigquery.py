"""A small fake of BigQuery's REST API (datasets, tables, insertAll), for the real client library.

Tables carry an ETag; a PATCH of a table (`client.update_table`) merges the fields it sends, is
refused with 412 when its If-Match names an older ETag, and is recorded in `patches`.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

from werkzeug.wrappers import Request, Response

BASE = r"/bigquery/v2/projects/(?P<project>[^/]+)"


class FakeBigQuery:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.datasets: dict[str, dict] = {}
        self.tables: dict[str, dict] = {}
        self.etags: dict[str, str] = {}  # table -> its current ETag
        self.requests: list[tuple[str, str, Any]] = []
        self.inserted: dict[str, list[tuple[str, dict]]] = {}  # table -> (insertId, json)
        self.fail_inserts = 0  # answer the next N insertAll calls with 503
        self.reject_insert_ids: set[str] = set()  # rows answered with a per-row error
        self.hold: threading.Event | None = None  # insertAll hangs until this is set
        self.held = 0  # insertAll calls that have hung so far
        self.patches: list[tuple[str, dict, str | None]] = []  # (table, body, If-Match)
        self._etags = 0

    def install(self, httpserver) -> None:
        httpserver.expect_request(re.compile(r"^/bigquery/v2/.*")).respond_with_handler(self.handle)

    def handle(self, request: Request) -> Response:
        path, method = request.path, request.method
        body = json.loads(request.data) if request.data else None
        hold = self.hold
        if hold is not None and path.endswith("/insertAll"):
            with self.lock:
                self.held += 1
            hold.wait()
        with self.lock:
            self.requests.append((method, path, body))
            if m := re.fullmatch(BASE + r"/datasets", path):
                return self._create(self.datasets, body["datasetReference"]["datasetId"], body)
            if m := re.fullmatch(BASE + r"/datasets/(?P<ds>[^/]+)", path):
                return self._get(self.datasets, m["ds"])
            if m := re.fullmatch(BASE + r"/datasets/(?P<ds>[^/]+)/tables", path):
                return self._create(self.tables, body["tableReference"]["tableId"], body, etag=True)
            if m := re.fullmatch(BASE + r"/datasets/(?P<ds>[^/]+)/tables/(?P<t>[^/]+)", path):
                if method == "PATCH":
                    return self._patch(m["t"], body, request.headers.get("If-Match"))
                return self._get(self.tables, m["t"])
            if m := re.fullmatch(
                BASE + r"/datasets/(?P<ds>[^/]+)/tables/(?P<t>[^/]+)/insertAll", path
            ):
                return self._insert(m["t"], body)
        return Response("not found", status=404)

    @staticmethod
    def _json(data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status=status, content_type="application/json")

    def _next_etag(self) -> str:
        self._etags += 1
        return f"etag-{self._etags}"

    def _create(self, store: dict, key: str, body: dict, etag: bool = False) -> Response:
        if key in store:
            return self._json({"error": {"code": 409, "message": "Already Exists"}}, 409)
        store[key] = body
        if etag:
            self.etags[key] = self._next_etag()
        return self._json(self._with_etag(key, body) if etag else body)

    def _with_etag(self, key: str, resource: dict) -> dict:
        return {**resource, "etag": self.etags[key]} if key in self.etags else resource

    def add_table(self, table: str, resource: dict) -> None:
        """A table that exists already (made by an older version, or by hand)."""
        with self.lock:
            self.tables[table] = resource
            self.etags[table] = self._next_etag()

    def _patch(self, table: str, body: dict, if_match: str | None) -> Response:
        if table not in self.tables:
            return self._json({"error": {"code": 404, "message": "Not found"}}, 404)
        self.patches.append((table, body, if_match))
        if if_match is not None and if_match != self.etags.get(table):
            return self._json({"error": {"code": 412, "message": "Precondition Failed"}}, 412)
        # Like BigQuery's PATCH: the fields sent replace the table's, the others stay.
        self.tables[table] = {**self.tables[table], **body}
        self.etags[table] = self._next_etag()
        return self._json(self._with_etag(table, self.tables[table]))

    def _get(self, store: dict, key: str) -> Response:
        if key not in store:
            return self._json({"error": {"code": 404, "message": "Not found"}}, 404)
        return self._json(self._with_etag(key, store[key]) if store is self.tables else store[key])

    def _insert(self, table: str, body: dict) -> Response:
        if self.fail_inserts > 0:
            self.fail_inserts -= 1
            return self._json({"error": {"code": 503, "message": "backend error"}}, 503)
        errors = []
        for index, row in enumerate(body["rows"]):
            if row["insertId"] in self.reject_insert_ids:
                errors.append(
                    {
                        "index": index,
                        "errors": [{"reason": "invalid", "message": "no such field: bogus"}],
                    }
                )
                continue
            self.inserted.setdefault(table, []).append((row["insertId"], row["json"]))
        return self._json({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors})

    def all_insert_ids(self) -> list[str]:
        """Every row received, a resent one as often as it came."""
        return [i for rows in self.inserted.values() for i, _ in rows]

    def stored_insert_ids(self) -> list[str]:
        """The rows as BigQuery keeps them: a row resent with the same insertId is dropped
        (its documented best-effort de-duplication, which the shipper relies on when the
        database fails between BigQuery's answer and the row marked delivered)."""
        return sorted({i for rows in self.inserted.values() for i, _ in rows})
