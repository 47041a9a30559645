"""Issue M: deleting an account (services/erasure.py), by its owner with the current password and
by the operator (the service behind the admin API and `vgen user delete`).

Every blob of the user goes from storage (local disk, and S3 through the moto server the storage
tests use), orphans under their task folders too; sessions and links go; the user row stays,
anonymised, with its ledger (which still sums to the balance) and payment records; the address
can sign up again as a new account; a deleted user never logs in again. Refused while a run is in
flight. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from sqlmodel import Session, col, select

from tests.adapters.test_storage import aws_env, moto_url, s3_bucket  # noqa: F401 - fixtures
from tests.helpers import ingest, login_session, make_user, token_of
from vgen_app import clock
from vgen_app.adapters import storage as storage_mod
from vgen_app.adapters.payments import get_payments
from vgen_app.adapters.simulator import Simulator
from vgen_app.adapters.storage import LocalStorage, S3Storage, Storage, get_storage
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import with_db
from vgen_app.models import (
    CheckoutSession,
    LedgerEntry,
    LinkPurpose,
    OneTimeLink,
    PaymentCredit,
    Run,
    RunStatus,
    Task,
    TaskInput,
    User,
    UserSession,
)
from vgen_app.services import (
    account,
    accounts,
    admin,
    billing,
    erasure,
    ledger,
    passwords,
    run_worker,
    runs,
    sessions,
    tasks,
    uploads,
)
from vgen_app.services.errors import AccountError, NotFound

PW = "correct horse"


# --- storage: local disk or S3 (moto) -------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Storage]:
    """The app's storage (STORAGE_URL) for this test: a folder, or a bucket on the moto server."""
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "spool"))
    if request.param == "local":
        monkeypatch.setenv("STORAGE_URL", f"file://{tmp_path / 'storage'}")
    else:
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("STORAGE_URL", f"s3://{bucket}/app")
        monkeypatch.setenv("S3_ENDPOINT_URL", request.getfixturevalue("moto_url"))
    reset_settings()
    storage_mod._cache.clear()
    yield get_storage()
    storage_mod._cache.clear()


def blobs(store: Storage) -> list[str]:
    """Every object in the storage, read around the code under test (no list_keys)."""
    if isinstance(store, LocalStorage):
        return sorted(
            p.relative_to(store.root).as_posix() for p in store.root.rglob("*") if p.is_file()
        )
    assert isinstance(store, S3Storage)
    client = boto3.client("s3", endpoint_url=store.endpoint_url)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


# --- a user with everything -----------------------------------------------------------------------


@dataclass
class Account:
    user_id: str
    email: str
    task_id: str
    run_id: str
    token: str  # a live session
    reset_token: str  # a pending reset link
    deleted_task_id: str  # deleted by its owner before
    checkout_id: str
    task_ids: list[str] = field(default_factory=list)


def drive(db: Session, sim: Simulator, store: Storage, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run_worker.step(db, sim, store)
        db.expire_all()
        status = db.get(Run, run_id).status
        db.commit()
        if status == RunStatus.SUCCEEDED:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not succeed")


def build_account(
    db: Session, samples: dict[str, Path], sim_dir: Path, email: str = "ann@example.com"
) -> Account:
    """A user who paid (test checkout), has a task with both inputs and a succeeded run (result
    and poster stored), an orphan blob in that task's folder, a task deleted before, a live
    session and a pending reset link."""
    store = get_storage()
    uid = make_user(db, email, PW)
    provider = get_payments()
    checkout = billing.start_checkout(db, uid, "10k", provider)
    assert billing.pay_test_checkout(db, checkout.id, uid, provider).status == "credited"
    task = tasks.create_task(db, uid, "lipsync", "My clip")
    for slot in ("video", "audio"):
        ingest(uid, task.id, slot, samples[slot])
    # Ids kept as strings: reading an expired object's attribute would open a transaction
    # (on SQLite: the write lock) in the test's session.
    task_id, checkout_id = task.id, checkout.id
    run_id = runs.start_run(db, uid, task_id).id
    drive(db, Simulator(sim_dir, delay_s=0), store, run_id)
    # A replaced input whose delete failed at the time: the row is gone, the blob is not.
    store.put_file(f"inputs/{task_id}/video/orphan.mp4", samples["video"])
    old_id = tasks.create_task(db, uid, "lipsync", "Old one").id
    ingest(uid, old_id, "video", samples["video"])
    uploads.delete_task(uid, old_id)
    store.put_file(f"results/{old_id}/left-behind.mp4", samples["video"])  # a purge that failed
    token = login_session(db, email, PW)
    (mail,) = passwords.request_password_reset(db, email).mails
    db.commit()
    return Account(
        uid, email, task_id, run_id, token, token_of(mail), old_id, checkout_id, [task_id, old_id]
    )


def _mine(keys: list[str], account: Account) -> list[str]:
    return [k for k in keys if any(t in k for t in account.task_ids)]


def _rows(db: Session, model: type, *where) -> list:
    db.expire_all()
    rows = list(db.exec(select(model).where(*where)))
    db.commit()
    return rows


# --- the deletion ---------------------------------------------------------------------------------


def test_delete_account_leaves_no_blob_session_or_link_and_keeps_the_ledger(
    db: Session, samples, store: Storage, tmp_path: Path, figure
) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    eve = build_account(db, samples, tmp_path / "sim-eve", "eve@example.com")
    before = blobs(store)
    assert len(_mine(before, ann)) >= 5  # two inputs, result, poster, the two orphans
    balance = ledger.balance_of(db, ann.user_id)
    entries = len(_rows(db, LedgerEntry, LedgerEntry.user_id == ann.user_id))
    assert with_db(sessions.validate, ann.token) is not None

    done = erasure.delete_account(ann.user_id, PW)

    after = blobs(store)
    assert _mine(after, ann) == []  # nothing of hers, in any folder
    assert sorted(set(before) - set(after)) == sorted(_mine(before, ann))  # eve's all there
    assert (done.files_removed, done.files_failed) == (len(_mine(before, ann)), 0)
    assert (done.tasks_deleted, done.sessions) == (1, 1)
    assert done.links >= 3  # activation, login ticket, reset
    uid = ann.user_id
    assert _rows(db, UserSession, UserSession.user_id == uid) == []
    assert _rows(db, OneTimeLink, OneTimeLink.user_id == uid) == []
    assert with_db(sessions.validate, ann.token) is None
    (user,) = _rows(db, User, User.id == uid)
    assert user.email == f"deleted-{uid}@deleted.invalid"
    assert user.status == "blocked" and user.deleted_at == done.deleted_at
    assert user.password_hash.startswith("!deleted:") and user.signup_utm is None
    assert user.run_mails is False
    # Tasks marked deleted, their rows kept; inputs gone; runs forget their files and inputs.
    assert {t.id: t.deleted_at is not None for t in _rows(db, Task, Task.owner_id == uid)} == {
        ann.task_id: True,
        ann.deleted_task_id: True,
    }
    assert _rows(db, TaskInput, col(TaskInput.task_id).in_(ann.task_ids)) == []
    (run,) = _rows(db, Run, Run.owner_id == uid)
    assert (run.result_key, run.poster_key, run.inputs, run.status) == (None, None, {}, "succeeded")
    # The money stays on record and still adds up.
    assert len(_rows(db, LedgerEntry, LedgerEntry.user_id == uid)) == entries
    assert ledger.balance_of(db, uid) == balance == ledger.ledger_sum(db, uid)
    assert [c.status for c in _rows(db, CheckoutSession, CheckoutSession.user_id == uid)] == [
        "paid"
    ]
    assert len(_rows(db, PaymentCredit, PaymentCredit.user_id == uid)) == 1
    # Eve is untouched.
    assert with_db(sessions.validate, eve.token) is not None
    assert tasks.get_task(db, eve.user_id, eve.task_id)
    assert ledger.ledger_sum(db, eve.user_id) == ledger.balance_of(db, eve.user_id)
    figure(
        f"{type(store).__name__}: {len(_mine(before, ann))} blobs of the user before, 0 after "
        f"(of the other user's {len(before) - len(_mine(before, ann))}: all kept); "
        f"{done.sessions} session and {done.links} links deleted; {entries} ledger rows kept, "
        f"sum {ledger.ledger_sum(db, uid)} == balance {balance}"
    )


def test_the_operator_deletes_the_same_way(db: Session, samples, store: Storage, tmp_path) -> None:
    ann = build_account(db, samples, tmp_path / "sim")
    price = int(_rows(db, Run, Run.id == ann.run_id)[0].price)
    done = erasure.delete_user(ann.user_id)
    assert done.files_failed == 0 and done.files_removed >= 5
    assert _mine(blobs(store), ann) == []
    assert _rows(db, UserSession, UserSession.user_id == ann.user_id) == []
    assert _rows(db, OneTimeLink, OneTimeLink.user_id == ann.user_id) == []
    assert _rows(db, User, User.id == ann.user_id)[0].deleted_at == done.deleted_at
    assert (
        ledger.ledger_sum(db, ann.user_id) == ledger.balance_of(db, ann.user_id) == 10_000 - price
    )


# --- refusals -------------------------------------------------------------------------------------


def _unchanged(db: Session, account: Account, store: Storage, before: list[str]) -> None:
    (user,) = _rows(db, User, User.id == account.user_id)
    assert (user.email, user.status, user.deleted_at) == (account.email, "activated", None)
    assert with_db(sessions.validate, account.token) is not None
    assert tasks.get_task(db, account.user_id, account.task_id)
    assert blobs(store) == before


def test_a_wrong_password_changes_nothing(db: Session, samples, local_storage, tmp_path) -> None:
    store = get_storage()
    ann = build_account(db, samples, tmp_path / "sim")
    before = blobs(store)
    for wrong in ("correct horsE", "", "x" * 129, None):
        with pytest.raises(AccountError) as exc:
            erasure.delete_account(ann.user_id, wrong)  # type: ignore[arg-type]
        assert (exc.value.code, exc.value.message) == ("wrong_password", account.WRONG_PASSWORD)
    _unchanged(db, ann, store, before)
    # A password changed between the check and the deletion: refused, asked again.
    with pytest.raises(AccountError) as exc:
        erasure.erase_rows(db, ann.user_id, password_hash="$2b$04$not.the.current.one")
    assert exc.value.code == "wrong_password"
    _unchanged(db, ann, store, before)


def test_wrong_passwords_count_as_failed_logins(db: Session, local_storage) -> None:
    """A stolen session cannot try passwords without end here either: the login limit."""
    uid = make_user(db, "ann@example.com", PW)
    limit = get_settings().login_max_failures_per_email
    for _ in range(limit):
        with pytest.raises(AccountError) as exc:
            erasure.delete_account(uid, "a guess")
        assert exc.value.code == "wrong_password"
    for guess in ("another guess", PW):  # beyond the limit even the right one waits
        with pytest.raises(AccountError) as exc:
            erasure.delete_account(uid, guess)
        assert exc.value.code == "rate_limited"
    assert with_db(erasure.deleted_at, uid) is None
    clock.travel(timedelta(minutes=get_settings().login_failure_window_minutes, seconds=1))
    assert erasure.delete_account(uid, PW).user_id == uid


def test_refused_while_a_run_is_in_flight(db: Session, samples, local_storage, tmp_path) -> None:
    store = get_storage()
    ann = build_account(db, samples, tmp_path / "sim")
    queued = runs.start_run(db, ann.user_id, ann.task_id)
    before = blobs(store)
    for delete in (
        lambda: erasure.delete_account(ann.user_id, PW),
        lambda: erasure.delete_user(ann.user_id),
    ):
        with pytest.raises(erasure.AccountBusy) as exc:
            delete()
        assert exc.value.code == "busy" and "cancel it" in exc.value.message.lower()
    # The batch's own guard, past the check before it (a run started in between):
    with pytest.raises(erasure.AccountBusy):
        erasure.erase_rows(db, ann.user_id)
    _unchanged(db, ann, store, before)
    # Processing (handed to the generation service) is in flight too.
    sim = Simulator(tmp_path / "sim2", delay_s=30)
    run_worker.step(db, sim, store)
    db.expire_all()
    assert db.get(Run, queued.id).status == RunStatus.PROCESSING
    db.commit()
    with pytest.raises(erasure.AccountBusy):
        erasure.delete_user(ann.user_id)
    assert runs.fail_run(db, queued.id, "stopped for the test")  # refunded
    done = erasure.delete_account(ann.user_id, PW)
    assert done.files_failed == 0
    assert ledger.ledger_sum(db, ann.user_id) == ledger.balance_of(db, ann.user_id)


def test_unknown_or_already_deleted_is_gone(db: Session, local_storage) -> None:
    uid = make_user(db, "ann@example.com", PW)
    for junk in ("noSuchUser123", "", "x" * 40, "a b", "\x00"):
        with pytest.raises(erasure.UserGone):
            erasure.delete_user(junk)
        with pytest.raises(erasure.UserGone):
            erasure.delete_account(junk, PW)
    first = erasure.delete_user(uid)
    with pytest.raises(erasure.UserGone) as exc:
        erasure.delete_user(uid)
    assert exc.value.deleted_at == first.deleted_at and exc.value.code == "not_found"
    with pytest.raises(erasure.UserGone):
        erasure.erase_rows(db, uid)
    with pytest.raises(erasure.UserGone):
        erasure.delete_account(uid, PW)
    assert with_db(erasure.deleted_at, uid) == first.deleted_at


# --- what a deleted user can still do: nothing ----------------------------------------------------


def test_the_address_signs_up_again_as_a_new_account(db: Session, local_storage) -> None:
    old = make_user(db, "ann@example.com", PW)
    ledger.change_balance(db, old, 700, "topup")
    erasure.delete_account(old, PW)
    new = make_user(db, "  Ann@Example.com ", "another password")
    assert new != old
    assert ledger.balance_of(db, new) == 0 and ledger.balance_of(db, old) == 700
    assert accounts.login(db, "ann@example.com", "another password").user_id == new
    with pytest.raises(AccountError):
        accounts.login(db, "ann@example.com", PW)  # the old password was the old account's
    assert [u.id for u in admin.find_by_email(db, "ann@example.com")] == [new]
    view = admin.get_user(db, old)
    assert (view.email, view.status) == (f"deleted-{old}@deleted.invalid", "blocked")


def test_a_deleted_user_never_logs_in_resets_or_activates(db: Session, local_storage) -> None:
    uid = make_user(db, "ann@example.com", PW)
    token = login_session(db, "ann@example.com", PW)
    ticket = accounts.login(db, "ann@example.com", PW).ticket
    (reset,) = passwords.request_password_reset(db, "ann@example.com").mails
    pending = accounts.signup(db, "bob@example.com", PW)  # never activated
    (activation,) = pending.mails
    erasure.delete_account(uid, PW)
    erasure.delete_user(pending.user_id)

    assert with_db(sessions.validate, token) is None
    for email in ("ann@example.com", f"deleted-{uid}@deleted.invalid"):
        with pytest.raises(AccountError) as exc:
            accounts.login(db, email, PW)
        assert exc.value.code == "bad_credentials"
    with pytest.raises(AccountError):
        accounts.redeem_login_ticket(db, ticket)
    with pytest.raises(AccountError) as exc:
        passwords.reset_password(db, token_of(reset), "a new password")
    assert exc.value.code == "bad_link"
    assert passwords.request_password_reset(db, "ann@example.com").mails == []
    with pytest.raises(AccountError) as exc:
        accounts.activate(db, token_of(activation))
    assert exc.value.code == "bad_link"
    with pytest.raises(AccountError):  # the anonymised address is no address
        accounts.signup(db, f"deleted-{uid}@deleted.invalid", PW)
    assert _rows(db, OneTimeLink, col(OneTimeLink.user_id).in_([uid, pending.user_id])) == []
    assert _rows(db, OneTimeLink, OneTimeLink.purpose == LinkPurpose.RESET) == []


def _race(uid: str, task_id: str, run_after: float) -> dict[str, str]:
    """The operator deletes the user while the user starts a run (`run_after` seconds later):
    what each one got."""
    barrier = threading.Barrier(2)
    outcome: dict[str, str] = {}

    def delete() -> None:
        barrier.wait()
        try:
            erasure.delete_user(uid)
            outcome["delete"] = "done"
        except erasure.AccountBusy:
            outcome["delete"] = "busy"

    def start() -> None:
        barrier.wait()
        time.sleep(run_after)
        try:
            with_db(runs.start_run, uid, task_id)
            outcome["run"] = "started"
        except NotFound:
            outcome["run"] = "not_found"

    threads = [threading.Thread(target=delete), threading.Thread(target=start)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return outcome


def test_a_run_started_during_the_deletion_never_survives_it(
    db: Session, samples, local_storage, figure
) -> None:
    """Deletion and Run at once, on one task, a few times: either the run was first (deletion
    refused: busy) or the deletion (the run refused: not found) — never a run in flight, or a
    debit, for a deleted user."""
    seen: dict[str, int] = {}
    for i, run_after in enumerate((0, 0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.2)):
        uid = make_user(db, f"racer{i}@example.com", PW)
        ledger.change_balance(db, uid, 5_000, "topup")
        task = tasks.create_task(db, uid, "lipsync", "race")
        for slot in ("video", "audio"):
            ingest(uid, task.id, slot, samples[slot])
        outcome = _race(uid, task.id, run_after)
        key = f"delete {outcome['delete']}, run {outcome['run']}"
        seen[key] = seen.get(key, 0) + 1
        assert key in ("delete busy, run started", "delete done, run not_found"), key
        (user,) = _rows(db, User, User.id == uid)
        in_flight = _rows(db, Run, Run.owner_id == uid, col(Run.status).in_(tasks.IN_FLIGHT))
        assert (user.deleted_at is None) == bool(in_flight)
        assert ledger.ledger_sum(db, uid) == ledger.balance_of(db, uid)
    figure(f"{sum(seen.values())} deletions raced with a Run: {seen}; in flight after: 0")


# --- the CLI: vgen user delete ----------------------------------------------------------------------


def test_cli_user_delete(
    db: Session, samples, local_storage, tmp_path: Path, capsys, monkeypatch
) -> None:
    from vgen_app.cli import main

    ann = build_account(db, samples, tmp_path / "sim")
    with pytest.raises(SystemExit):  # neither delete nor export
        main(["user", "frobnicate", ann.user_id])
    assert main(["user", "delete", "nobody@example.com", "--yes"]) == 1
    assert "no user" in capsys.readouterr().out
    # Without --yes and no terminal to ask on: refused.
    assert main(["user", "delete", ann.email]) == 2
    assert "--yes" in capsys.readouterr().err
    # Asked on a terminal: anything but yes keeps it.
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["user", "delete", ann.email]) == 1
    assert "nothing deleted" in capsys.readouterr().out
    assert with_db(sessions.validate, ann.token) is not None
    # A run in flight: refused, said why.
    queued = runs.start_run(db, ann.user_id, ann.task_id).id
    assert main(["user", "delete", ann.user_id, "--yes"]) == 1
    assert "cancel it" in capsys.readouterr().err.lower()
    assert runs.cancel_run(db, ann.user_id, queued)
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    assert main(["user", "delete", ann.email]) == 0
    out = capsys.readouterr().out
    assert f"deleted user {ann.user_id}" in out and "0 not removed" in out
    assert _mine(blobs(get_storage()), ann) == []
    assert main(["user", "delete", ann.user_id, "--yes"]) == 1
    assert "already deleted" in capsys.readouterr().out
    assert main(["user", ann.user_id]) == 0  # the lookup shows it anonymised
    assert f"email=deleted-{ann.user_id}@deleted.invalid status=blocked" in capsys.readouterr().out
