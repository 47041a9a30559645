"""Analytics sink: BigQuery when BIGQUERY_PROJECT is set; otherwise events stay in the local outbox.

The three tables (SPEC §4), day-partitioned on `timestamp`, each day's partition deleted
BIGQUERY_PARTITION_EXPIRATION_DAYS after it (`init_tables`: the privacy page's analytics period). Rows are streamed with
`insert_rows_json`, the outbox row id as insertId, so a resend after a crash is deduplicated.
Blocking (HTTP): call from a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import bigquery

F = bigquery.SchemaField

SCHEMAS: dict[str, list[bigquery.SchemaField]] = {
    "user_sessions": [
        F("timestamp", "TIMESTAMP", mode="REQUIRED"),
        F("ip", "STRING"),
        F("geo", "STRING", description="ISO country code (CF-IPCountry or offline lookup)"),
        F("useragent", "STRING"),
        F("action", "STRING", mode="REQUIRED", description="login | signup"),
        F("userid", "STRING", mode="REQUIRED"),
        F("email", "STRING"),
        F("utm", "JSON", description="utm_* parameters of a sign-up"),
        F("event_id", "INTEGER", mode="REQUIRED", description="outbox row id (= insertId)"),
    ],
    "balance_changes": [
        F("timestamp", "TIMESTAMP", mode="REQUIRED"),
        F("userid", "STRING", mode="REQUIRED"),
        F("email", "STRING"),
        F(
            "action",
            "STRING",
            mode="REQUIRED",
            description="topup | used | refund | manual | clawback",
        ),
        F("diff", "INTEGER", mode="REQUIRED"),
        F("old_balance", "INTEGER", mode="REQUIRED"),
        F("new_balance", "INTEGER", mode="REQUIRED"),
        F("outcome", "STRING", mode="REQUIRED", description="applied | rejected"),
        F("reference", "STRING", description="checkout session / run id / admin"),
        F("ledger_entry_id", "INTEGER"),
        F("event_id", "INTEGER", mode="REQUIRED", description="outbox row id (= insertId)"),
    ],
    "generation_log": [
        F("timestamp", "TIMESTAMP", mode="REQUIRED"),
        F("userid", "STRING", mode="REQUIRED"),
        F("email", "STRING"),
        F("taskid", "STRING", mode="REQUIRED"),
        F(
            "properties",
            "JSON",
            description="run_id, attempt, model, provider, provider_job_id, price, inputs "
            "(slot -> filename, size_bytes, duration_s, kind); see docs/analytics.md",
        ),
        F("event_id", "INTEGER", mode="REQUIRED", description="outbox row id (= insertId)"),
    ],
}


class SinkUnavailable(Exception):
    """BigQuery could not be reached or answered 5xx: retry the whole batch later."""


@dataclass(frozen=True)
class RowError:
    index: int
    message: str


def to_bigquery_row(table: str, event_id: int, row: dict[str, Any]) -> dict[str, Any]:
    """Keep the schema's columns; JSON columns travel as JSON text in the streaming API."""
    out: dict[str, Any] = {}
    for field in SCHEMAS[table]:
        if field.name == "event_id":
            out["event_id"] = event_id
            continue
        value = row.get(field.name)
        if field.field_type == "JSON":
            value = json.dumps(value if value is not None else {}, sort_keys=True)
        out[field.name] = value
    return out


class AnalyticsSink(Protocol):
    def insert(self, table: str, rows: list[tuple[str, dict[str, Any]]]) -> list[RowError]:
        """Insert (insertId, row) pairs; per-row errors are returned, transport errors raised."""


class BigQuerySink:
    def __init__(
        self,
        project: str,
        dataset: str,
        client: bigquery.Client | None = None,
        retry_deadline_s: float = 30.0,
        timeout_s: float = 30.0,
    ) -> None:
        self.project, self.dataset = project, dataset
        self.client = client or make_client(project)
        self.retry = Retry(deadline=retry_deadline_s, initial=0.2, maximum=5.0)
        self.timeout_s = timeout_s

    def table_id(self, table: str) -> str:
        return f"{self.project}.{self.dataset}.{table}"

    def insert(self, table: str, rows: list[tuple[str, dict[str, Any]]]) -> list[RowError]:
        if not rows:
            return []
        try:
            errors = self.client.insert_rows_json(
                self.table_id(table),
                [row for _, row in rows],
                row_ids=[insert_id for insert_id, _ in rows],
                # Valid rows go in even when another row of the batch is rejected.
                skip_invalid_rows=True,
                retry=self.retry,
                timeout=self.timeout_s,
            )
        except (gexc.GoogleAPICallError, gexc.RetryError, OSError) as exc:
            raise SinkUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return [
            RowError(
                int(e.get("index", -1)),
                "; ".join(
                    f"{x.get('reason', '')}: {x.get('message', '')}".strip(": ")
                    for x in e.get("errors", [])
                )
                or "rejected",
            )
            for e in errors
        ]


def make_client(
    project: str, api_endpoint: str | None = None, credentials: Credentials | None = None
) -> bigquery.Client:
    """The real client; `api_endpoint` + anonymous credentials point it at a local fake in tests."""
    options = ClientOptions(api_endpoint=api_endpoint) if api_endpoint else None
    if api_endpoint and credentials is None:
        credentials = AnonymousCredentials()
    return bigquery.Client(project=project, credentials=credentials, client_options=options)


DAY_MS = 24 * 60 * 60 * 1000


def init_tables(
    client: bigquery.Client,
    project: str,
    dataset: str,
    location: str = "US",
    partition_expiration_days: int | None = None,
) -> list[str]:
    """Create the dataset and the day-partitioned tables, idempotently, each day's partition
    deleted `partition_expiration_days` (default BIGQUERY_PARTITION_EXPIRATION_DAYS) after it;
    a table that exists gets that expiration too (updated only if it differs). Returns one line
    per table, for the operator: `user_sessions (created; partitions expire after 730 days)`."""
    if partition_expiration_days is None:
        from vgen_app.config import get_settings

        partition_expiration_days = get_settings().bigquery_partition_expiration_days
    if partition_expiration_days <= 0:
        raise ValueError("partition_expiration_days must be positive")
    days = partition_expiration_days
    expiration_ms = days * DAY_MS
    ds = bigquery.Dataset(f"{project}.{dataset}")
    ds.location = location
    client.create_dataset(ds, exists_ok=True)
    lines = []
    for name, schema in SCHEMAS.items():
        table_id = f"{project}.{dataset}.{name}"
        table = bigquery.Table(table_id, schema=schema)
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field="timestamp", expiration_ms=expiration_ms
        )
        try:
            client.create_table(table)
            lines.append(f"{name} (created; partitions expire after {days} days)")
            continue
        except gexc.Conflict:
            pass
        lines.append(f"{name} ({_set_expiration(client, table_id, expiration_ms)})")
    return lines


def _set_expiration(client: bigquery.Client, table_id: str, expiration_ms: int) -> str:
    """Give an existing table's partitions this expiration; says what it did."""
    days = f"{expiration_ms / DAY_MS:g} days"
    existing = client.get_table(table_id)
    partitioning = existing.time_partitioning
    if partitioning is None:  # partitioning cannot be added to a table: it must be recreated
        return "exists but is NOT partitioned: its rows never expire; recreate it"
    if partitioning.expiration_ms == expiration_ms:
        return f"ok; partitions expire after {days}"
    was = partitioning.expiration_ms
    partitioning.expiration_ms = expiration_ms
    existing.time_partitioning = partitioning
    # The read's ETag goes with the update: it fails rather than overwrite a change made since.
    client.update_table(existing, ["time_partitioning"])
    before = "never" if was is None else f"{was / DAY_MS:g} days"
    return f"updated; partitions expire after {days} instead of {before}"
