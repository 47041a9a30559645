"""The ledger: atomic conditional changes, recorded refusals, no overspend under concurrency."""

from __future__ import annotations

import threading

import pytest
from sqlmodel import Session, select

from tests.helpers import make_user
from vgen_app.db import session_scope
from vgen_app.models import AnalyticsOutbox, LedgerEntry
from vgen_app.services import ledger


def test_credit_and_debit_record_ledger_and_outbox_rows(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    up = ledger.change_balance(db, uid, 1000, "topup", reference="cs_1")
    down = ledger.change_balance(db, uid, -300, "used", reference="run_1")
    assert (up.applied, up.old_balance, up.new_balance) == (True, 0, 1000)
    assert (down.applied, down.old_balance, down.new_balance) == (True, 1000, 700)
    assert ledger.balance_of(db, uid) == 700
    entries = db.exec(select(LedgerEntry).order_by(LedgerEntry.id)).all()
    assert [
        (e.action, e.diff, e.old_balance, e.new_balance, e.outcome, e.reference) for e in entries
    ] == [
        ("topup", 1000, 0, 1000, "applied", "cs_1"),
        ("used", -300, 1000, 700, "applied", "run_1"),
    ]
    assert all(e.email == "ann@example.com" and e.created_at for e in entries)
    rows = [r.row for r in db.exec(select(AnalyticsOutbox)) if r.table_name == "balance_changes"]
    assert [
        (r["action"], r["diff"], r["old_balance"], r["new_balance"], r["outcome"]) for r in rows
    ] == [
        ("topup", 1000, 0, 1000, "applied"),
        ("used", -300, 1000, 700, "applied"),
    ]
    assert all(r["userid"] == uid and r["email"] == "ann@example.com" for r in rows)


def test_debit_larger_than_balance_is_refused_and_recorded(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    ledger.change_balance(db, uid, 100, "manual")
    refused = ledger.change_balance(db, uid, -101, "used", reference="run_9")
    assert refused.applied is False
    assert (refused.old_balance, refused.new_balance) == (100, 100)
    assert ledger.balance_of(db, uid) == 100
    last = db.exec(select(LedgerEntry).order_by(LedgerEntry.id.desc())).first()
    assert (last.outcome, last.diff, last.old_balance, last.new_balance) == (
        "rejected",
        -101,
        100,
        100,
    )
    rows = [r.row for r in db.exec(select(AnalyticsOutbox)) if r.table_name == "balance_changes"]
    assert rows[-1]["outcome"] == "rejected" and rows[-1]["diff"] == -101
    # History and the ledger sum only count applied changes.
    assert ledger.ledger_sum(db, uid) == 100
    assert [e.diff for e in ledger.history(db, uid).entries] == [100]


@pytest.mark.parametrize("diff", [0, 1.5, True, "10", 10**13])
def test_bad_diff_is_refused_before_touching_anything(db: Session, diff: object) -> None:
    uid = make_user(db, "ann@example.com")
    with pytest.raises(ValueError):
        ledger.change_balance(db, uid, diff, "manual")  # type: ignore[arg-type]
    assert db.exec(select(LedgerEntry)).all() == []


def test_unknown_user(db: Session) -> None:
    with pytest.raises(ledger.UnknownUser):
        ledger.change_balance(db, "nobody", 5, "manual")
    with pytest.raises(ValueError):
        ledger.change_balance(db, "nobody", 5, "gift")


def test_history_is_newest_first_and_paginated(db: Session) -> None:
    uid = make_user(db, "ann@example.com")
    for i in range(1, 26):
        ledger.change_balance(db, uid, i, "manual")
    page1 = ledger.history(db, uid, page=1, per_page=10)
    assert (page1.total, page1.pages) == (25, 3)
    assert [e.diff for e in page1.entries] == list(range(25, 15, -1))
    page3 = ledger.history(db, uid, page=3, per_page=10)
    assert [e.diff for e in page3.entries] == [5, 4, 3, 2, 1]
    assert ledger.history(db, uid, page=99, per_page=10).page == 3
    series = ledger.balance_series(db, uid)
    assert [b for _, b in series][:4] == [0, 1, 3, 6] and series[-1][1] == sum(range(1, 26))


def test_200_concurrent_debits_against_a_balance_covering_50(database_url: str) -> None:
    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 50 * 7, "topup")
    results: list[bool] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)
    lock = threading.Lock()

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(10):
            try:
                with session_scope() as s:
                    change = ledger.change_balance(s, uid, -7, "used", reference=f"run_{n}_{i}")
                with lock:
                    results.append(change.applied)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 200
    assert results.count(True) == 50 and results.count(False) == 150
    with session_scope() as db:
        assert ledger.balance_of(db, uid) == 0
        assert ledger.ledger_sum(db, uid) == 0  # 350 in, 50 × 7 out
        entries = db.exec(select(LedgerEntry).where(LedgerEntry.action == "used")).all()
        assert sum(e.outcome == "applied" for e in entries) == 50
        assert sum(e.outcome == "rejected" for e in entries) == 150
        # Each applied debit saw a distinct old balance: no two spent the same tokens.
        olds = sorted(e.old_balance for e in entries if e.outcome == "applied")
        assert olds == list(range(7, 351, 7))


def test_reads_stay_usable_after_the_session_closes(database_url: str) -> None:
    """UI handlers call services through `run_db`, whose session is gone when they read the result."""
    from vgen_app.db import with_db

    with session_scope() as db:
        uid = make_user(db, "ann@example.com")
        ledger.change_balance(db, uid, 42, "manual")
    page = with_db(ledger.history, uid)
    assert [(e.diff, e.new_balance, e.action) for e in page.entries] == [(42, 42, "manual")]
