"""Analytics shipping throughput: outbox rows/s into a local fake BigQuery endpoint, batching on.

Floor, measured in the same run: the same rows sent with the same client straight from memory
(no database reads or delivery marks). Prints events/s for both and the ratio.

    .venv/bin/python bench/analytics_shipping.py [--events 20000] [--batch 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TMP = Path(tempfile.mkdtemp(prefix="vgen-bench-"))
os.environ["DATABASE_URL"] = f"sqlite:///{TMP / 'bench.db'}"

from pytest_httpserver import HTTPServer

from tests.fakes.fake_bigquery import FakeBigQuery
from vgen_app import clock
from vgen_app.adapters.analytics import BigQuerySink, make_client, to_bigquery_row
from vgen_app.cli import migrate
from vgen_app.db import session_scope
from vgen_app.models import AnalyticsOutbox
from vgen_app.services import shipping


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    migrate(os.environ["DATABASE_URL"])
    row = {
        "userid": "u1",
        "email": "ann@example.com",
        "action": "used",
        "diff": -500,
        "old_balance": 1000,
        "new_balance": 500,
        "outcome": "applied",
        "reference": "run_1",
        "ledger_entry_id": 1,
        "timestamp": clock.now().isoformat(),
    }
    with session_scope() as db:
        db.add_all(
            AnalyticsOutbox(table_name="balance_changes", row=row) for _ in range(args.events)
        )
        db.commit()

    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    fake = FakeBigQuery()
    fake.install(server)
    server.start()
    try:
        client = make_client("bench", server.url_for("").rstrip("/"))
        sink = BigQuerySink("bench", "analytics", client, retry_deadline_s=5)

        # Floor: the same rows straight from memory, same batch size, same client.
        payload = [(str(i), to_bigquery_row("balance_changes", i, row)) for i in range(args.events)]
        start = time.perf_counter()
        for i in range(0, len(payload), args.batch):
            sink.insert("balance_changes", payload[i : i + args.batch])
        floor = args.events / (time.perf_counter() - start)
        fake.inserted.clear()

        start = time.perf_counter()
        sent = 0
        while True:
            with session_scope() as db:
                report = shipping.ship_once(db, sink, args.batch)
            sent += report.sent
            if report.sent + report.rejected < args.batch:
                break
        elapsed = time.perf_counter() - start
        shipped = sent / elapsed
        unique = len(set(fake.all_insert_ids()))
    finally:
        server.stop()

    print(
        f"events: {args.events}, batch: {args.batch}, delivered: {sent}, unique insertIds: {unique}"
    )
    print(f"floor (client from memory): {floor:,.0f} events/s")
    print(f"shipper (outbox → BigQuery, marks delivered): {shipped:,.0f} events/s")
    print(f"ratio shipper/floor: {shipped / floor:.2f}   target: >= 5,000 events/s")


if __name__ == "__main__":
    main()
