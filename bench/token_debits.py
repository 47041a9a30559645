"""Token debits/s under contention through `ledger.change_balance`, on SQLite and PostgreSQL.

N threads each do M debits of 7 tokens against one user whose balance covers only a third of them,
each debit in its own `session_scope()` session. Floor, measured in the same run with the same
engine and threads: N x M trivial `SELECT 1` transactions (a bare round trip per session). Prints
debits/s (applied + rejected), the applied count, the no-overspend checks, and ledger/floor ratio
(medians of --reps runs, floor and ledger runs interleaved).

    .venv/bin/python bench/token_debits.py [--threads 8 32] [--ops 400] [--reps 3] [--backends sqlite postgres]

--spread U (issue P): the same threads debit U users (default 1000) at random instead of one, so no
row is contended, on PostgreSQL; the floor is then the plain transaction a debit needs at least,
on the same engine, threads and users: `UPDATE users SET balance = balance - 7 WHERE id = :id AND
balance >= 7 RETURNING balance` + `INSERT INTO ledger_entries …`, committed. Target: >= 0.5x.

    .venv/bin/python bench/token_debits.py --spread 1000 [--threads 8 32] [--ops 4000]
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Callable

from common import median, migrated, temp_postgres, temp_sqlite_url, use_database
from sqlalchemy import text

from tests.helpers import make_user
from vgen_app.db import session_scope
from vgen_app.services import ledger

DEBIT = 7
TIME_CAP_S = 60.0  # per measured run; a run stops early (and says so) past it
_emails = itertools.count()


def run_threads(
    n: int, m: int, body: Callable[[int, int], None]
) -> tuple[float, list[BaseException], bool]:
    """Run body(thread, i) for i < m in n threads; (seconds, errors, capped)."""
    barrier = threading.Barrier(n + 1)
    errors: list[BaseException] = []
    capped = threading.Event()
    deadline: list[float] = []

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(m):
            if time.perf_counter() > deadline[0]:
                capped.set()
                return
            try:
                body(t, i)
            except BaseException as exc:  # noqa: BLE001 - reported
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    start = time.perf_counter()
    deadline.append(start + TIME_CAP_S)
    barrier.wait()
    for th in threads:
        th.join()
    return time.perf_counter() - start, errors, capped.is_set()


def floor_run(n: int, m: int) -> tuple[float, int]:
    def body(_t: int, _i: int) -> None:
        with session_scope() as s:
            s.exec(text("SELECT 1")).one()  # type: ignore[call-overload]
            s.commit()

    secs, errors, capped = run_threads(n, m, body)
    assert not errors, errors[:3]
    return secs, capped


def debit_run(n: int, m: int) -> dict:
    attempts = n * m
    funded = attempts // 3
    with session_scope() as db:
        uid = make_user(db, f"bench{next(_emails)}@example.com")
        ledger.change_balance(db, uid, funded * DEBIT, "topup")
    lock = threading.Lock()
    results: list[bool] = []

    def body(t: int, i: int) -> None:
        with session_scope() as s:
            change = ledger.change_balance(s, uid, -DEBIT, "used", reference=f"b_{t}_{i}")
        with lock:
            results.append(change.applied)

    secs, errors, capped = run_threads(n, m, body)
    with session_scope() as db:
        balance = ledger.balance_of(db, uid)
        lsum = ledger.ledger_sum(db, uid)
    done = len(results)
    applied = results.count(True)
    ok = (
        not errors
        and balance >= 0
        and applied == min(done, funded)
        and lsum == balance
        and balance == (funded - applied) * DEBIT
    )
    return {
        "secs": secs,
        "done": done,
        "applied": applied,
        "rejected": done - applied,
        "balance": balance,
        "ledger_sum": lsum,
        "funded": funded,
        "errors": len(errors),
        "capped": capped,
        "ok": ok,
        "first_error": repr(errors[0]) if errors else "",
    }


FLOOR_UPDATE = text(
    "UPDATE users SET balance = balance - :d WHERE id = :id AND balance >= :d "
    "RETURNING balance, email"
)
FLOOR_INSERT = text(
    "INSERT INTO ledger_entries (op_id, user_id, email, action, diff, old_balance, new_balance, "
    "outcome, reference, created_at) VALUES (:op, :id, :email, 'used', :nd, :old, :new, "
    "'applied', :ref, now())"
)


def spread_users(count: int, each: int) -> list[str]:
    """`count` users with `each` debits' worth of tokens, made through the services."""
    ids = []
    for _ in range(count):
        with session_scope() as db:
            uid = make_user(db, f"spread{next(_emails)}@example.com")
            ledger.change_balance(db, uid, each * DEBIT, "topup")
        ids.append(uid)
    return ids


def spread_floor(n: int, m: int, users: list[str]) -> float:
    import uuid

    def body(t: int, i: int) -> None:
        uid = users[(t * 7919 + i * 104729) % len(users)]
        with session_scope() as s:
            conn = s.connection()
            row = conn.execute(FLOOR_UPDATE, {"d": DEBIT, "id": uid}).first()
            if row is not None:
                conn.execute(
                    FLOOR_INSERT,
                    {
                        "op": uuid.uuid4().hex,
                        "id": uid,
                        "email": row.email,
                        "nd": -DEBIT,
                        "old": row.balance + DEBIT,
                        "new": row.balance,
                        "ref": f"f_{t}_{i}",
                    },
                )
            s.commit()

    secs, errors, _capped = run_threads(n, m, body)
    assert not errors, errors[:3]
    return n * m / secs


def spread_debits(n: int, m: int, users: list[str]) -> float:
    def body(t: int, i: int) -> None:
        uid = users[(t * 7919 + i * 104729 + 1) % len(users)]
        with session_scope() as s:
            ledger.change_balance(s, uid, -DEBIT, "used", reference=f"s_{t}_{i}")

    secs, errors, _capped = run_threads(n, m, body)
    assert not errors, errors[:3]
    return n * m / secs


def bench_spread(url: str, count: int, threads: list[int], ops: int, reps: int) -> None:
    from sqlmodel import select

    from vgen_app.models import User

    use_database(migrated(url))
    t0 = time.perf_counter()
    users = spread_users(count, 2 * reps * len(threads) * ops // count + 4)
    print(f"[postgres] {count} users made in {time.perf_counter() - t0:.1f} s")
    spread_floor(4, 20, users)
    spread_debits(4, 20, users)  # warm-up: pool, statement caches
    for n in threads:
        m = max(1, ops // n)
        floors, debits = [], []
        for _ in range(reps):
            floors.append(spread_floor(n, m, users))
            debits.append(spread_debits(n, m, users))
        f, d = median(floors), median(debits)
        print(f"[postgres, spread over {count} users] threads={n} ops={n * m} reps={reps}")
        print(
            f"  floor UPDATE..RETURNING + INSERT tx/s  median {f:8.1f}   runs {[round(x) for x in floors]}"
        )
        print(
            f"  ledger.change_balance debits/s          median {d:8.1f}   runs {[round(x) for x in debits]}"
        )
        print(f"  ratio {d / f:.3f}  (target >= 0.5: {'HOLDS' if d / f >= 0.5 else 'MISSED'})")
    bad = 0
    with session_scope() as db:
        for uid in users:
            balance = db.exec(select(User.balance).where(User.id == uid)).one()
            bad += balance < 0 or balance != ledger.ledger_sum(db, uid)
    print(
        f"  every balance >= 0 and equal to its ledger sum: {'OK' if not bad else f'{bad} FAILED'}"
    )


def bench_backend(name: str, url: str, threads: list[int], ops: int, reps: int) -> None:
    use_database(migrated(url))
    # warm the pool/engine
    floor_run(2, 5)
    for n in threads:
        m = max(1, ops // n)
        floors, debits, infos = [], [], []
        for _ in range(reps):
            fsecs, _ = floor_run(n, m)
            floors.append(n * m / fsecs)
            info = debit_run(n, m)
            debits.append(info["done"] / info["secs"])
            infos.append(info)
        f, d = median(floors), median(debits)
        all_ok = all(i["ok"] for i in infos)
        print(f"[{name}] threads={n} debits/thread={m} attempts={n * m} reps={reps}")
        print(f"  floor SELECT 1 tx/s   median {f:9.1f}   runs {[round(x, 1) for x in floors]}")
        print(f"  debits/s              median {d:9.1f}   runs {[round(x, 1) for x in debits]}")
        print(f"  ratio debits/floor    {d / f:.3f}")
        for k, i in enumerate(infos):
            print(
                f"  run {k}: done={i['done']} applied={i['applied']} rejected={i['rejected']} "
                f"funded_for={i['funded']} final_balance={i['balance']} ledger_sum={i['ledger_sum']} "
                f"errors={i['errors']} capped={i['capped']} {i['first_error']}"
            )
        print(
            f"  no overspend (balance>=0, applied==min(attempts, funded), ledger_sum==balance): "
            f"{'OK' if all_ok else 'FAILED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, nargs="+", default=[8, 32])
    parser.add_argument(
        "--ops", type=int, default=400, help="debits per measurement (split over threads)"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--spread", type=int, default=0, help="users to spread over (PostgreSQL)")
    args = parser.parse_args()
    assert (
        args.spread <= 5000 and args.ops <= 20000 and args.reps <= 7 and max(args.threads) <= 64
    ), "keep it bounded"
    import logging

    logging.disable(logging.INFO)  # the services log every change; not part of what we measure
    if args.spread:
        with temp_postgres() as url:
            bench_spread(url, args.spread, args.threads, args.ops, args.reps)
        return
    if "sqlite" in args.backends:
        bench_backend("sqlite", temp_sqlite_url("debits"), args.threads, args.ops, args.reps)
    if "postgres" in args.backends:
        with temp_postgres() as url:
            bench_backend("postgres", url, args.threads, args.ops, args.reps)


if __name__ == "__main__":
    main()
