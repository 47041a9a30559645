"""Retention (SPEC §9, services/retention.py) on SQLite and PostgreSQL: each kind is removed just
past its period and kept just inside it, in bounded batches of one statement each, once per cluster
(the worker's lease); what a rate limit, the shipper or a live upload still needs is never touched."""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from tests.helpers import statements
from vgen_app import clock, worker
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope
from vgen_app.models import (
    AnalyticsOutbox,
    AuthEvent,
    Lease,
    LinkPurpose,
    OneTimeLink,
    User,
    UserSession,
    UserStatus,
)
from vgen_app.services import leases, ratelimit, retention, sessions, shipping

SECOND = timedelta(seconds=1)


# --- helpers ------------------------------------------------------------------------------------


def count(db: Session, model: type, *where) -> int:
    n = int(db.exec(select(func.count()).select_from(model).where(*where)).one())
    db.commit()
    return n


def ids(db: Session, model: type) -> set[int]:
    found = set(db.exec(select(model.id)).all())
    db.commit()
    return found


def make_user(db: Session) -> str:
    user = User(
        email=f"{secrets.token_hex(4)}@example.com",
        password_hash="x",
        status=UserStatus.ACTIVATED,
        created_at=clock.now(),
    )
    db.add(user)
    db.commit()
    return user.id


def outbox_row(db: Session, *, delivered: bool, attempts: int = 0) -> int:
    now = clock.now()
    row = AnalyticsOutbox(
        table_name="user_sessions",
        row={"timestamp": now.isoformat()},
        created_at=now,
        delivered_at=now if delivered else None,
        attempts=attempts,
    )
    db.add(row)
    db.commit()
    assert row.id is not None
    return row.id


def link(
    db: Session, user_id: str, *, ttl: timedelta, used: bool = False, purpose=LinkPurpose.RESET
) -> int:
    now = clock.now()
    row = OneTimeLink(
        user_id=user_id,
        purpose=purpose,
        token_hash=secrets.token_hex(32),
        created_at=now,
        expires_at=now + ttl,
        used_at=now if used else None,
    )
    db.add(row)
    db.commit()
    assert row.id is not None
    return row.id


def session_row(db: Session, user_id: str, *, expires_in: timedelta, revoked: bool = False) -> int:
    now = clock.now()
    row = UserSession(
        token_hash=secrets.token_hex(32),
        user_id=user_id,
        created_at=now,
        last_seen_at=now,
        expires_at=now + expires_in,
        revoked_at=now if revoked else None,
    )
    db.add(row)
    db.commit()
    assert row.id is not None
    return row.id


def auth_event(db: Session, kind: str = ratelimit.LOGIN_FAILURE, **who: str) -> int:
    row = AuthEvent(kind=kind, created_at=clock.now(), **who)
    db.add(row)
    db.commit()
    assert row.id is not None
    return row.id


def prune_all(db: Session, batch: int = 500) -> retention.RetentionReport:
    return retention.run_once(db, batch=batch)


def deletes(seen: list[str], table: str) -> int:
    return sum(1 for s in seen if s.lstrip().upper().startswith(f"DELETE FROM {table.upper()}"))


# --- the analytics outbox -----------------------------------------------------------------------


def test_delivered_outbox_rows_go_outbox_keep_days_after_delivery(db: Session) -> None:
    keep = timedelta(days=get_settings().outbox_keep_days)
    delivered = outbox_row(db, delivered=True)
    pending = outbox_row(db, delivered=False)
    failed = outbox_row(db, delivered=False, attempts=shipping.MAX_ROW_ATTEMPTS)

    clock.travel(keep - SECOND)
    assert prune_all(db).outbox == 0
    assert ids(db, AnalyticsOutbox) == {delivered, pending, failed}

    later = outbox_row(db, delivered=True)  # delivered just now: its own period starts now
    clock.travel(2 * SECOND)
    report = prune_all(db)
    assert report.outbox == 1
    assert ids(db, AnalyticsOutbox) == {pending, failed, later}


def test_undelivered_outbox_rows_wait_to_be_shipped_for_the_whole_analytics_period(
    db: Session,
) -> None:
    """Whatever the shipper's troubles (BigQuery down, rows refused, or no BigQuery at all) a row
    not delivered is kept — until the analytics period the privacy page states is over: BigQuery
    would expire its partition on arrival, and without BigQuery the outbox is the analytics log."""
    period = timedelta(days=get_settings().bigquery_partition_expiration_days)
    pending = outbox_row(db, delivered=False)
    failed = outbox_row(db, delivered=False, attempts=shipping.MAX_ROW_ATTEMPTS)

    clock.travel(period - SECOND)
    assert prune_all(db).outbox == 0
    assert ids(db, AnalyticsOutbox) == {pending, failed}
    fresh = outbox_row(db, delivered=False)

    clock.travel(2 * SECOND)
    assert prune_all(db).outbox == 2
    assert ids(db, AnalyticsOutbox) == {fresh}


# --- sessions, links ----------------------------------------------------------------------------


def test_sessions_go_when_they_expire_revoked_or_not(db: Session) -> None:
    ttl = timedelta(days=get_settings().session_ttl_days)
    user = make_user(db)
    sessions.create(db, user, ip="10.0.0.1")  # the real thing: expires SESSION_TTL_DAYS on
    db.commit()
    signed_out = sessions.create(db, user)
    db.commit()
    assert sessions.revoke(db, signed_out)
    short = session_row(db, user, expires_in=timedelta(hours=1))  # revoked or not: same rule
    short_revoked = session_row(db, user, expires_in=timedelta(hours=1), revoked=True)

    clock.travel(timedelta(hours=1) + SECOND)
    assert prune_all(db).sessions == 2
    assert not {short, short_revoked} & ids(db, UserSession)
    assert count(db, UserSession) == 2  # live, and signed out but not yet expired

    clock.travel(ttl - timedelta(hours=1) - 2 * SECOND)  # just inside SESSION_TTL_DAYS
    assert prune_all(db).sessions == 0
    assert count(db, UserSession) == 2
    clock.travel(2 * SECOND)
    assert prune_all(db).sessions == 2
    assert count(db, UserSession) == 0


def test_links_go_a_grace_after_they_expire_used_or_not(db: Session) -> None:
    ttl = timedelta(hours=get_settings().link_ttl_hours)
    now = clock.now()
    assert now - retention.Cutoffs.at(now).links == retention.LINK_GRACE
    user = make_user(db)
    valid = link(db, user, ttl=ttl)
    used = link(db, user, ttl=ttl, used=True, purpose=LinkPurpose.ACTIVATION)
    link(db, user, ttl=timedelta(seconds=60), used=True, purpose=LinkPurpose.LOGIN_TICKET)

    clock.travel(timedelta(seconds=60) + retention.LINK_GRACE - SECOND)
    assert prune_all(db).links == 0  # the used activation link still answers "already active"
    clock.travel(2 * SECOND)
    assert prune_all(db).links == 1
    assert ids(db, OneTimeLink) == {valid, used}

    clock.travel(ttl - timedelta(seconds=60) - 2 * SECOND)  # LINK_TTL_HOURS + LINK_GRACE - 1 s
    assert prune_all(db).links == 0
    clock.travel(2 * SECOND)
    assert prune_all(db).links == 2
    assert ids(db, OneTimeLink) == set()


# --- auth events --------------------------------------------------------------------------------


def test_auth_events_a_rate_limit_still_counts_are_kept(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login-failure window made longer than the minimum keep: every event it counts stays."""
    monkeypatch.setenv("LOGIN_FAILURE_WINDOW_MINUTES", str(3 * 24 * 60))
    reset_settings()
    window = timedelta(minutes=get_settings().login_failure_window_minutes)
    assert retention.rate_limit_window() == window > retention.AUTH_EVENTS_MIN_KEEP
    auth_event(db, email="ann@example.com", ip="10.0.0.1")  # counted until the window ends
    clock.travel(timedelta(days=1))
    counted = [auth_event(db, email="ann@example.com", ip="10.0.0.1") for _ in range(3)]
    signup = auth_event(db, ratelimit.SIGNUP, ip="10.0.0.1")

    clock.travel(window - timedelta(days=1) - SECOND)  # the first one just inside the window
    before = ratelimit.count(db, ratelimit.LOGIN_FAILURE, window, email="ann@example.com")
    assert prune_all(db).auth_events == 0
    assert ratelimit.count(db, ratelimit.LOGIN_FAILURE, window, email="ann@example.com") == before
    assert before == 4

    clock.travel(2 * SECOND)
    assert prune_all(db).auth_events == 1
    assert ids(db, AuthEvent) == {*counted, signup}
    assert ratelimit.count(db, ratelimit.LOGIN_FAILURE, window, email="ann@example.com") == 3


def test_auth_events_are_kept_at_least_a_day_with_the_default_windows(db: Session) -> None:
    assert retention.rate_limit_window() < retention.AUTH_EVENTS_MIN_KEEP  # 15 min, 1 h, 60 s
    event = auth_event(db, ratelimit.LINK_REQUEST, ip="10.0.0.1")
    clock.travel(retention.AUTH_EVENTS_MIN_KEEP - SECOND)
    assert prune_all(db).auth_events == 0
    clock.travel(2 * SECOND)
    assert prune_all(db).auth_events == 1
    assert event not in ids(db, AuthEvent)


# --- batches ------------------------------------------------------------------------------------


def test_ten_due_rows_in_batches_of_three_take_four_statements_and_spare_the_rest(
    db: Session,
) -> None:
    user = make_user(db)
    for _ in range(10):
        session_row(db, user, expires_in=timedelta(minutes=1))
    live = [session_row(db, user, expires_in=timedelta(days=1)) for _ in range(5)]
    clock.travel(timedelta(minutes=2))

    with statements() as seen:
        report = prune_all(db, batch=3)

    assert report.sessions == 10
    assert deletes(seen, "sessions") == 4  # 3 + 3 + 3 + 1
    assert all("LIMIT" in s.upper() for s in seen if s.upper().startswith("DELETE"))
    assert ids(db, UserSession) == set(live)
    assert not report.more


def test_a_run_is_bounded_and_the_next_one_goes_on(db: Session) -> None:
    user = make_user(db)
    for _ in range(10):
        link(db, user, ttl=timedelta(minutes=1))
    clock.travel(retention.LINK_GRACE + timedelta(minutes=2))

    first = retention.run_once(db, batch=3, max_batches=2)
    assert (first.links, first.more) == (6, True)
    assert count(db, OneTimeLink) == 4
    second = retention.run_once(db, batch=3, max_batches=2)
    assert (second.links, second.more) == (4, False)
    assert count(db, OneTimeLink) == 0


def test_a_kill_mid_run_keeps_the_batches_done(db: Session, database_url: str) -> None:
    user = make_user(db)
    for _ in range(7):
        session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(minutes=2))
    asked = 0

    def killed_after_two_batches(_db: Session) -> bool:
        nonlocal asked
        asked += 1
        if asked > 3:  # the outbox's one batch, then two of sessions
            raise SystemExit("killed")
        return True

    with session_scope() as other, pytest.raises(SystemExit):
        retention.run_once(other, batch=3, still_mine=killed_after_two_batches)
    assert count(db, UserSession) == 1  # two committed batches of three
    assert prune_all(db).sessions == 1


def test_a_run_that_loses_its_lease_stops_at_once(db: Session) -> None:
    user = make_user(db)
    for _ in range(4):
        session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(minutes=2))
    answers = iter([True, True, False])  # the outbox's batch, one of sessions

    report = retention.run_once(db, batch=3, still_mine=lambda _db: next(answers))
    assert (report.sessions, report.more) == (3, True)
    assert count(db, UserSession) == 1


def test_nothing_due_nothing_removed(db: Session) -> None:
    user = make_user(db)
    session_row(db, user, expires_in=timedelta(days=1))
    link(db, user, ttl=timedelta(hours=1))
    auth_event(db, ip="10.0.0.1")
    outbox_row(db, delivered=True)
    outbox_row(db, delivered=False)

    report = prune_all(db)
    assert report.total == 0 and not report.more
    assert str(report).startswith("pruned 0 outbox, 0 sessions, 0 links, 0 auth events, 0 spool")


# --- the upload spool ---------------------------------------------------------------------------


def _aged(path: Path, age: timedelta) -> Path:
    path.write_bytes(b"x")
    when = (clock.now() - age).timestamp()
    os.utime(path, (when, when))
    return path


def test_orphaned_spool_files_go_and_a_live_upload_keeps_its_own(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    orphan = _aged(spool / "dead.part", retention.SPOOL_ORPHAN_AGE + timedelta(minutes=1))
    live = _aged(spool / "live.part", timedelta(seconds=5))
    almost = _aged(spool / "slow.part", retention.SPOOL_ORPHAN_AGE - timedelta(minutes=1))
    other = _aged(spool / "notes.txt", timedelta(days=30))  # not a spool file
    (spool / "dir.part").mkdir()

    assert retention.prune_spool(spool, clock.now()) == 1
    assert not orphan.exists()
    assert live.exists() and almost.exists() and other.exists()
    assert retention.prune_spool(tmp_path / "missing", clock.now()) == 0

    clock.travel(retention.SPOOL_ORPHAN_AGE)  # mtimes stay: now both are old
    assert retention.prune_spool(spool, clock.now(), limit=1) == 1
    assert retention.prune_spool(spool, clock.now()) == 1
    assert not live.exists() and not almost.exists() and other.exists()


def test_run_once_prunes_a_spool_it_is_given(db: Session, tmp_path: Path) -> None:
    orphan = _aged(tmp_path / "a.part", retention.SPOOL_ORPHAN_AGE * 2)
    assert retention.run_once(db, spool_dir=tmp_path).spool == 1
    assert not orphan.exists()


# --- the worker: once per cluster ---------------------------------------------------------------


def _lease_holder(db: Session) -> str | None:
    db.expire_all()
    lease = db.get(Lease, worker.RETENTION_LEASE)
    db.commit()
    return lease.holder if lease else None


def test_the_retention_round_takes_the_lease_and_a_second_holder_does_nothing(
    db: Session,
) -> None:
    user = make_user(db)
    session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(minutes=2))

    first = worker.retention_round("host-a:1:aaaa")
    assert first is not None and first.sessions == 1
    assert _lease_holder(db) == "host-a:1:aaaa"

    session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(minutes=2))
    assert worker.retention_round("host-b:2:bbbb") is None  # the lease is a's for the interval
    assert count(db, UserSession) == 1
    again = worker.retention_round("host-a:1:aaaa")  # its holder renews it and goes on
    assert again is not None and again.sessions == 1

    session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(seconds=worker.retention_lease_seconds()) + SECOND)  # a died
    taken = worker.retention_round("host-b:2:bbbb")
    assert taken is not None and taken.sessions == 1
    assert _lease_holder(db) == "host-b:2:bbbb"


def test_a_round_renews_the_lease_before_every_batch(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_BATCH", "2")
    reset_settings()
    user = make_user(db)
    for _ in range(5):
        session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(minutes=2))
    renewals: list[datetime] = []
    real = leases.acquire

    def counting(session: Session, name: str, who: str, ttl: float) -> bool:
        renewals.append(clock.now())
        return real(session, name, who, ttl)

    monkeypatch.setattr(leases, "acquire", counting)
    report = worker.retention_round("host-a:1:aaaa")
    assert report is not None and report.sessions == 5
    # One to take it, then one before each batch: 3 of sessions, 1 for every other kind.
    assert len(renewals) == 1 + 3 + 3


def test_housekeeping_prunes_the_database_and_this_machines_spool(
    db: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path))
    reset_settings()
    orphan = _aged(tmp_path / "left.part", retention.SPOOL_ORPHAN_AGE * 2)
    user = make_user(db)
    session_row(db, user, expires_in=timedelta(minutes=1))
    clock.travel(timedelta(minutes=2))

    async def run_a_moment() -> None:
        task = asyncio.create_task(worker.housekeeping())
        for _ in range(200):
            await asyncio.sleep(0.05)
            if not orphan.exists() and count(db, UserSession) == 0:
                break
        task.cancel()

    asyncio.run(run_a_moment())
    assert not orphan.exists()
    assert count(db, UserSession) == 0


@pytest.mark.parametrize(
    "name",
    [
        "OUTBOX_KEEP_DAYS",
        "RETENTION_BATCH",
        "RETENTION_EVERY_SECONDS",
        "BIGQUERY_PARTITION_EXPIRATION_DAYS",
    ],
)
def test_retention_settings_must_be_positive(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from vgen_app.config import Settings

    monkeypatch.setenv(name, "0")
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()
