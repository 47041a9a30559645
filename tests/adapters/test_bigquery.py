"""`init_tables` (what `vgen bigquery init` runs) through the real client against the local fake:
new tables are made with the partition expiration, existing ones get it by an update (SPEC §9)."""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer

from tests.fakes.fake_bigquery import FakeBigQuery
from vgen_app.adapters.analytics import DAY_MS, SCHEMAS, init_tables, make_client
from vgen_app.config import reset_settings

PROJECT, DATASET = "vgen-test", "analytics"
TABLES = list(SCHEMAS)


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeBigQuery:
    fake = FakeBigQuery()
    fake.install(httpserver)
    return fake


@pytest.fixture
def client(httpserver: HTTPServer, fake: FakeBigQuery):
    return make_client(PROJECT, httpserver.url_for("").rstrip("/"))


def partitioning(fake: FakeBigQuery, table: str) -> dict:
    return fake.tables[table]["timePartitioning"]


def old_table(name: str, partitioning: dict | None) -> dict:
    """A table as an earlier `vgen bigquery init` (or a person) made it."""
    resource = {
        "tableReference": {"projectId": PROJECT, "datasetId": DATASET, "tableId": name},
        "schema": {"fields": [f.to_api_repr() for f in SCHEMAS[name]]},
    }
    if partitioning is not None:
        resource["timePartitioning"] = partitioning
    return resource


def test_new_tables_expire_their_partitions_after_the_default_730_days(
    client, fake: FakeBigQuery
) -> None:
    lines = init_tables(client, PROJECT, DATASET)

    assert lines == [f"{t} (created; partitions expire after 730 days)" for t in TABLES]
    for table in TABLES:
        assert partitioning(fake, table) == {
            "type": "DAY",
            "field": "timestamp",
            "expirationMs": str(730 * DAY_MS),  # the API's int64 travels as a string
        }
    assert fake.patches == []


def test_the_dataset_and_the_schemas(client, fake: FakeBigQuery) -> None:
    init_tables(client, PROJECT, DATASET)

    ds = fake.datasets[DATASET]
    assert ds["datasetReference"] == {"projectId": PROJECT, "datasetId": DATASET}
    assert ds["location"] == "US"
    fields = {t: {f["name"]: f["type"] for f in fake.tables[t]["schema"]["fields"]} for t in TABLES}
    for table in TABLES:
        assert fields[table]["timestamp"] == "TIMESTAMP" and fields[table]["event_id"] == "INTEGER"
    assert set(fields["user_sessions"]) >= {"ip", "geo", "useragent", "action", "userid", "email"}
    assert set(fields["balance_changes"]) >= {
        "userid",
        "email",
        "action",
        "diff",
        "old_balance",
        "new_balance",
        "outcome",
    }
    assert fields["generation_log"]["properties"] == "JSON"
    assert fields["generation_log"]["taskid"] == "STRING"


def test_a_second_init_changes_nothing(client, fake: FakeBigQuery) -> None:
    init_tables(client, PROJECT, DATASET)
    lines = init_tables(client, PROJECT, DATASET)

    assert lines == [f"{t} (ok; partitions expire after 730 days)" for t in TABLES]
    assert fake.patches == [] and len(fake.tables) == 3


def test_existing_tables_get_the_expiration_by_an_update_guarded_by_their_etag(
    client, fake: FakeBigQuery
) -> None:
    fake.datasets[DATASET] = {"datasetReference": {"projectId": PROJECT, "datasetId": DATASET}}
    for table in TABLES:  # made before partitions expired: no expirationMs
        fake.add_table(table, old_table(table, {"type": "DAY", "field": "timestamp"}))
    etags = dict(fake.etags)

    lines = init_tables(client, PROJECT, DATASET)

    assert lines == [
        f"{t} (updated; partitions expire after 730 days instead of never)" for t in TABLES
    ]
    assert [(table, if_match) for table, _, if_match in fake.patches] == [
        (t, etags[t]) for t in TABLES
    ]
    for table, body, _ in fake.patches:
        # Only the partitioning is sent, whole (its type and field kept).
        assert body == {
            "timePartitioning": {
                "type": "DAY",
                "field": "timestamp",
                "expirationMs": str(730 * DAY_MS),
            }
        }
        assert partitioning(fake, table)["expirationMs"] == str(730 * DAY_MS)
        assert fake.tables[table]["schema"] == old_table(table, None)["schema"]  # untouched


def test_the_setting_decides_and_a_changed_setting_updates_the_tables(
    client, fake: FakeBigQuery, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_tables(client, PROJECT, DATASET)
    monkeypatch.setenv("BIGQUERY_PARTITION_EXPIRATION_DAYS", "400")
    reset_settings()

    lines = init_tables(client, PROJECT, DATASET)

    assert lines == [
        f"{t} (updated; partitions expire after 400 days instead of 730 days)" for t in TABLES
    ]
    assert {partitioning(fake, t)["expirationMs"] for t in TABLES} == {str(400 * DAY_MS)}
    assert init_tables(client, PROJECT, DATASET, partition_expiration_days=30)[0] == (
        "user_sessions (updated; partitions expire after 30 days instead of 400 days)"
    )


def test_an_unpartitioned_table_is_reported_not_patched(client, fake: FakeBigQuery) -> None:
    fake.datasets[DATASET] = {"datasetReference": {"projectId": PROJECT, "datasetId": DATASET}}
    fake.add_table("balance_changes", old_table("balance_changes", None))

    lines = init_tables(client, PROJECT, DATASET)

    assert lines[1] == (
        "balance_changes (exists but is NOT partitioned: its rows never expire; recreate it)"
    )
    assert [table for table, _, _ in fake.patches] == []


def test_an_update_on_a_stale_etag_is_refused(client, fake: FakeBigQuery) -> None:
    """The fake honours If-Match as BigQuery does: a change made meanwhile is not overwritten."""
    from google.api_core import exceptions as gexc

    init_tables(client, PROJECT, DATASET)
    table = client.get_table(f"{PROJECT}.{DATASET}.user_sessions")
    fake.add_table("user_sessions", fake.tables["user_sessions"])  # someone changed it: new ETag
    table.time_partitioning.expiration_ms = DAY_MS
    with pytest.raises(gexc.PreconditionFailed):
        client.update_table(table, ["time_partitioning"])
    assert partitioning(fake, "user_sessions")["expirationMs"] == str(730 * DAY_MS)


def test_the_cli_prints_what_it_did(
    httpserver: HTTPServer, fake: FakeBigQuery, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from vgen_app.cli import main

    monkeypatch.setenv("BIGQUERY_PROJECT", PROJECT)
    monkeypatch.setenv("BIGQUERY_DATASET", DATASET)
    monkeypatch.setenv("BIGQUERY_API_ENDPOINT", httpserver.url_for("").rstrip("/"))
    reset_settings()

    assert main(["bigquery", "init"]) == 0

    out = capsys.readouterr().out
    for table in TABLES:
        assert f"{table} (created; partitions expire after 730 days)" in out
