"""Prometheus metrics (SPEC §11): every metric object, and the gauges read from the database.

Call sites count with one line (`metrics.UPLOAD_BYTES.inc(n)`, `@metrics.counts_logins`, …);
`scrape(db)` renders the text format for `GET /metrics` (api/metrics.py).

Counters and the histogram live in each worker process. With several workers they are kept in
prometheus-client's multiprocess mode: each process writes its values to memory-mapped files in
one folder (`PROMETHEUS_MULTIPROC_DIR`, made by the launcher: vgen_app/metrics_dir.py) and a
scrape, whichever worker answers it, sums the files of every worker (`MultiProcessCollector`).
prometheus-client picks the mode when it is first imported, from the environment; this module is
the only one that imports it, and it reads the mode back from the library rather than guessing.

The gauges about the whole system (runs by status, the queue, the analytics outbox) are not
process values: they are read from the database at scrape time — three aggregate queries on
indexed columns (ix_runs_status, ix_analytics_outbox_pending) — and reused for
METRICS_CACHE_SECONDS, so many scrapers (or many workers scraped at once) do not read them more
than once per interval per worker.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import case, func
from sqlmodel import Session, col, select

from vgen_app import clock
from vgen_app.config import get_settings
from vgen_app.db import end_read, read_only
from vgen_app.models import AnalyticsOutbox, Run, RunStatus
from vgen_app.services.errors import ServiceError

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("vgen.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# --- the mode ----------------------------------------------------------------------------------

# True when prometheus-client was imported with PROMETHEUS_MULTIPROC_DIR set (its values are then
# memory-mapped files in that folder).
MULTIPROCESS = values.ValueClass is not values.MutexValue
MULTIPROCESS_DIR: str | None = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if MULTIPROCESS else None
if MULTIPROCESS_DIR:
    Path(MULTIPROCESS_DIR).mkdir(parents=True, exist_ok=True)  # before the first value's file

# No `_created` series: the multiprocess collector has none, and one process's start time says
# nothing about a sum over several.
disable_created_metrics()

# One process: the metrics are registered here and scraped from here. Several: registered
# nowhere; a scrape reads every process's files instead.
_LOCAL: CollectorRegistry | None = None if MULTIPROCESS else CollectorRegistry()

# --- the metrics -------------------------------------------------------------------------------

LOGIN_OUTCOMES = ("ok", "refused", "rate_limited", "unverified", "blocked", "error")
LOGINS = Counter(
    "vgen_logins",
    "Login attempts by outcome: ok, refused (wrong e-mail or password), rate_limited, "
    "unverified (right password, e-mail not verified), blocked, error (e.g. database down).",
    ["outcome"],
    registry=_LOCAL,
)
SIGNUP_OUTCOMES = ("created", "existing", "rate_limited", "refused", "error")
SIGNUPS = Counter(
    "vgen_signups",
    "Sign-ups by outcome: created (a new account), existing (a taken address, answered like a "
    "new one), rate_limited, refused (invalid address or password), error.",
    ["outcome"],
    registry=_LOCAL,
)
WEBHOOKS = Counter(
    "vgen_webhooks",
    "Stripe webhook deliveries by event type (the handled types; other: any other type; unknown: "
    "refused before the type could be trusted) and outcome: credited, applied, duplicate, ignored, "
    "refused (no or bad signature, too large), malformed, deferred (Stripe unreachable: 503, "
    "retried), error.",
    ["type", "outcome"],
    registry=_LOCAL,
)
EVENT_SECONDS = Histogram(
    "vgen_event_handler_duration_seconds",
    "UI event handlers (Reflex events), from the state lock taken to the update sent, by handler "
    "(state.handler; only the app's registered handlers reach it).",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=_LOCAL,
)
UPLOAD_BYTES = Counter(
    "vgen_upload_bytes",
    "Bytes received by streamed uploads into task slots (accepted or refused).",
    registry=_LOCAL,
)
MEDIA_BYTES = Counter(
    "vgen_media_served_bytes",
    "Bytes of stored media sent by the media route, by kind (input, result, poster).",
    ["kind"],
    registry=_LOCAL,
)
for _outcome in LOGIN_OUTCOMES:
    LOGINS.labels(_outcome)
for _outcome in SIGNUP_OUTCOMES:
    SIGNUPS.labels(_outcome)


# --- one-line call sites -------------------------------------------------------------------------


def counts_logins(fn: Callable[P, T]) -> Callable[P, T]:
    """Wrap `accounts.login`: one count per attempt, by how it ended."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = fn(*args, **kwargs)
        except ServiceError as exc:
            LOGINS.labels(_LOGIN_CODES.get(exc.code, "refused")).inc()
            raise
        except Exception:
            LOGINS.labels("error").inc()
            raise
        LOGINS.labels("ok").inc()
        return result

    return wrapper


_LOGIN_CODES = {
    "bad_credentials": "refused",
    "rate_limited": "rate_limited",
    "unverified": "unverified",
    "blocked": "blocked",
}


def counts_signups(fn: Callable[P, T]) -> Callable[P, T]:
    """Wrap `accounts.signup`: created when the result names a new user, existing otherwise."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            result = fn(*args, **kwargs)
        except ServiceError as exc:
            SIGNUPS.labels("rate_limited" if exc.code == "rate_limited" else "refused").inc()
            raise
        except Exception:
            SIGNUPS.labels("error").inc()
            raise
        SIGNUPS.labels("created" if getattr(result, "user_id", None) else "existing").inc()
        return result

    return wrapper


def webhook(event_type: str | None, outcome: str) -> None:
    """One webhook delivery; `event_type` None: refused before its type could be trusted."""
    WEBHOOKS.labels(event_type or "unknown", outcome).inc()


def handler_label(event_name: str) -> str:
    """`reflex___state____state.vgen_app___ui___auth____login_state.submit` → `login_state.submit`
    (the handler and its state: names Reflex resolved to a registered handler, so bounded)."""
    state, _, handler = str(event_name).rpartition(".")
    return f"{state.rpartition('____')[2].rpartition('.')[2] or '-'}.{handler}"


def observe_event(event_name: str, seconds: float) -> None:
    EVENT_SECONDS.labels(handler_label(event_name)).observe(seconds)


# --- the gauges read from the database ---------------------------------------------------------


@dataclass(frozen=True)
class DbGauges:
    runs: dict[str, int]  # every status, 0 included
    queued_oldest_age_s: float  # 0 when nothing is queued
    outbox_pending: int
    outbox_failed: int
    outbox_oldest_pending_age_s: float  # 0 when nothing is pending
    read_seconds: float  # how long the three queries took


@read_only
def read_gauges(db: Session) -> DbGauges:
    """Three aggregate queries: runs per status (index ix_runs_status), the oldest queued run
    (the same index, few rows), the undelivered outbox rows (ix_analytics_outbox_pending)."""
    from vgen_app.services.shipping import MAX_ROW_ATTEMPTS  # BigQuery's client: only when read

    started = time.perf_counter()
    runs = {status.value: 0 for status in RunStatus}
    for status, count in db.exec(select(Run.status, func.count()).group_by(Run.status)).all():
        runs[str(status)] = int(count)
    oldest_queued = db.exec(
        select(func.min(Run.created_at)).where(col(Run.status) == RunStatus.QUEUED)
    ).one()
    pending = col(AnalyticsOutbox.attempts) < MAX_ROW_ATTEMPTS
    outbox = db.exec(
        select(
            func.count(case((pending, 1))),
            func.count(case((~pending, 1))),
            func.min(case((pending, AnalyticsOutbox.created_at))),
        ).where(col(AnalyticsOutbox.delivered_at).is_(None))
    ).one()
    end_read(db)
    now = clock.now()
    return DbGauges(
        runs=runs,
        queued_oldest_age_s=_age(now, oldest_queued),
        outbox_pending=int(outbox[0] or 0),
        outbox_failed=int(outbox[1] or 0),
        outbox_oldest_pending_age_s=_age(now, outbox[2]),
        read_seconds=time.perf_counter() - started,
    )


def _age(now: Any, then: Any) -> float:
    return max(0.0, (now - then).total_seconds()) if then is not None else 0.0


_cache: tuple[float, DbGauges] | None = None
_cache_lock = threading.Lock()


def cached_gauges(db: Session) -> DbGauges:
    """The database gauges, read at most once per METRICS_CACHE_SECONDS in this process (a scrape
    that finds them stale reads them; concurrent scrapes wait for that one read)."""
    global _cache
    ttl = get_settings().metrics_cache_seconds
    with _cache_lock:
        if _cache is not None and time.monotonic() - _cache[0] < ttl:
            return _cache[1]
        gauges = read_gauges(db)
        _cache = (time.monotonic(), gauges)
        return gauges


def forget_cache() -> None:
    global _cache
    with _cache_lock:
        _cache = None


class _DbCollector:
    """The database gauges as metric families (vgen_metrics_database_up 0 when the read failed)."""

    def __init__(self, gauges: DbGauges | None) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        g = self.gauges
        yield GaugeMetricFamily(
            "vgen_metrics_database_up",
            "1 when this scrape could read the gauges below from the database, else 0.",
            value=0 if g is None else 1,
        )
        yield GaugeMetricFamily(
            "vgen_analytics_shipping_enabled",
            "1 when analytics rows are shipped to BigQuery; 0: they stay in the outbox (pending "
            "then only grows).",
            value=1 if get_settings().bigquery_project else 0,
        )
        if g is None:
            return
        runs = GaugeMetricFamily(
            "vgen_runs", "Runs by status (from the database).", labels=["status"]
        )
        for status, count in g.runs.items():
            runs.add_metric([status], count)
        yield runs
        yield GaugeMetricFamily(
            "vgen_runs_queued", "Queue depth: runs waiting for the worker.", value=g.runs["queued"]
        )
        yield GaugeMetricFamily(
            "vgen_runs_queued_oldest_age_seconds",
            "Age of the oldest queued run (0 when none is queued).",
            value=g.queued_oldest_age_s,
        )
        yield GaugeMetricFamily(
            "vgen_outbox_pending",
            "Analytics outbox rows waiting to be shipped.",
            value=g.outbox_pending,
        )
        yield GaugeMetricFamily(
            "vgen_outbox_failed",
            "Analytics outbox rows given up after their attempts (`vgen analytics retry-failed`).",
            value=g.outbox_failed,
        )
        yield GaugeMetricFamily(
            "vgen_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row (0 when none is pending).",
            value=g.outbox_oldest_pending_age_s,
        )
        yield GaugeMetricFamily(
            "vgen_metrics_database_read_seconds",
            "How long the last read of these gauges took (they are reused for "
            "METRICS_CACHE_SECONDS).",
            value=g.read_seconds,
        )


def _process_registry() -> CollectorRegistry:
    if _LOCAL is not None:
        return _LOCAL
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
    return registry


@read_only
def scrape(db: Session) -> bytes:
    """The whole exposition (blocking: run it off the event loop): every worker's counters, then
    the database gauges. A database that cannot be read leaves the counters served."""
    try:
        gauges: DbGauges | None = cached_gauges(db)
    except Exception as exc:  # noqa: BLE001 - the counters are still worth serving
        log.warning("metrics: the database gauges could not be read: %s", type(exc).__name__)
        gauges = None
    return generate_latest(_process_registry()) + generate_latest(_DbCollector(gauges))  # type: ignore[arg-type]


def local_value(metric: Any, *labels: str) -> float:
    """This process's own value of a counter (tests, in either mode)."""
    child = metric.labels(*labels) if labels else metric
    return float(child._value.get())
