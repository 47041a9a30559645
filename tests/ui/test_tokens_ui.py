"""The Tokens page and the payment pages (issue L), in-process: the history names the task of each
run (linked, unless deleted) in one extra query for the page; `back` (the page the user came to
buy from) is kept through the checkout and offered as the way back."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlmodel import Session

from tests.helpers import login_session, make_user, statements, ui_state
from vgen_app import clock
from vgen_app.adapters.payments import CheckoutRequest, CreatedCheckout, TestCheckout, get_payments
from vgen_app.db import session_scope
from vgen_app.models import Run, RunStatus, Task
from vgen_app.services import billing, ledger, tasks
from vgen_app.ui import payment as payment_ui
from vgen_app.ui import tokens as tokens_ui


def run_of(db: Session, task: Task, attempt: int, status: RunStatus = RunStatus.SUCCEEDED) -> Run:
    run = Run(
        task_id=task.id,
        owner_id=task.owner_id,
        attempt=attempt,
        status=status,
        price=500,
        model=task.model,
        inputs={},
    )
    db.add(run)
    db.commit()
    db.refresh(run)
    return run


def debit(db: Session, user: str, run: Run) -> None:
    """What runs.start_run writes to the ledger (reference: the run's id)."""
    ledger.change_balance(db, user, -run.price, "used", reference=run.id)


def refund(db: Session, user: str, run: Run) -> None:
    ledger.change_balance(db, user, run.price, "refund", reference=run.id)


# --- the history -------------------------------------------------------------------------------


def test_history_names_each_runs_task_and_attempt(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 10_000, "topup", reference="cs_test_1")
    promo = tasks.create_task(db, ann, "lipsync", "Spanish promo")
    first, second = run_of(db, promo, 1, RunStatus.FAILED), run_of(db, promo, 2)
    debit(db, ann, first)
    refund(db, ann, first)
    debit(db, ann, second)
    gone = tasks.create_task(db, ann, "faceswap", "Old clip")
    old_run = run_of(db, gone, 1)
    debit(db, ann, old_run)
    gone.deleted_at = clock.now()
    db.add(gone)
    db.commit()
    ledger.change_balance(db, ann, 7, "manual", note="goodwill")

    page = ledger.history(db, ann)
    assert set(page.runs) == {first.id, second.id, old_run.id}
    assert page.runs[old_run.id].task_deleted and not page.runs[second.id].task_deleted
    rows = [tokens_ui.history_row(e, page.runs) for e in page.entries]
    assert [r.what for r in rows] == [
        "Manual adjustment",
        "Run of Old clip (attempt 1)",
        "Run of Spanish promo (attempt 2)",
        "Refund: Spanish promo (attempt 1)",
        "Run of Spanish promo (attempt 1)",
        "Top-up",
    ]
    assert [r.href for r in rows] == [
        "",
        "",  # a deleted task: its name, no link
        f"/tasks/{promo.id}",
        f"/tasks/{promo.id}",
        f"/tasks/{promo.id}",
        "",
    ]
    assert (rows[2].what_before, rows[2].task_name, rows[2].what_after) == (
        "Run of ",
        "Spanish promo",
        " (attempt 2)",
    )
    assert (rows[3].what_before, rows[3].task_name) == ("Refund: ", "Spanish promo")
    assert rows[5].task_name == "" and rows[0].task_name == ""  # shown as `what` alone


def test_a_run_that_cannot_be_found_keeps_the_plain_label(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    bob = make_user(db, "bob@example.com")
    ledger.change_balance(db, ann, 1000, "topup")
    bobs_run = run_of(db, tasks.create_task(db, bob, "lipsync", "Bob's secret"), 1)
    ledger.change_balance(db, ann, -10, "used", reference=bobs_run.id)  # not Ann's run
    ledger.change_balance(db, ann, -10, "used", reference="no-such-run")
    ledger.change_balance(db, ann, -10, "used")
    page = ledger.history(db, ann)
    assert page.runs == {}
    rows = [tokens_ui.history_row(e, page.runs) for e in page.entries]
    assert [r.what for r in rows][:3] == ["Task run"] * 3
    assert all(r.href == "" and "Bob" not in r.what for r in rows)


def test_the_runs_of_a_page_are_one_query(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 100_000, "topup")
    task = tasks.create_task(db, ann, "lipsync", "clip")
    debit(db, ann, run_of(db, task, 1))
    with statements() as few:
        ledger.history(db, ann)
    for attempt in range(2, 40):
        debit(db, ann, run_of(db, task, attempt))
    with statements() as many:
        page = ledger.history(db, ann, per_page=20)
    assert len(many) == len(few) == 3  # count, entries, their runs
    assert len(page.runs) == 20
    bob = make_user(db, "bob@example.com")
    ledger.change_balance(db, bob, 50, "topup")
    with statements() as none:
        ledger.history(db, bob)
    assert len(none) == 2  # no run named: no third query


def test_the_tokens_page_shows_the_names(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    ledger.change_balance(db, ann, 1000, "topup")
    task = tasks.create_task(db, ann, "lipsync", "Spanish promo")
    debit(db, ann, run_of(db, task, 1))
    cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
    state = ui_state(tokens_ui.TokensState, "/tokens", cookie=cookie)
    asyncio.run(state.on_load())
    assert state.history_rows[0].what == "Run of Spanish promo (attempt 1)"
    assert state.history_rows[0].href == f"/tasks/{task.id}"
    assert state.back == ""


# --- back to the task after a top-up --------------------------------------------------------------


@pytest.mark.parametrize(
    ("back", "kept"),
    [
        ("/tasks/abc123", "/tasks/abc123"),
        ("/", "/"),
        ("/tasks/abc?x=1&y=2", "/tasks/abc?x=1&y=2"),
        (None, None),
        ("", None),
        ("//evil.example", None),
        ("/\\evil.example", None),
        ("/\t/evil.example", None),  # a browser drops the tab: //evil.example
        ("/\n/evil.example", None),
        ("/ /x", None),
        ("https://evil.example/tasks/1", None),
        ("tasks/1", None),
        ("/" + "a" * 400, None),
    ],
)
def test_only_an_app_path_is_a_way_back(back: str | None, kept: str | None) -> None:
    assert billing.return_path(back) == kept


class Recording:
    """A provider that records what it was asked (Stripe's place)."""

    name = "stripe"

    def __init__(self) -> None:
        self.requests: list[CheckoutRequest] = []

    def create_checkout(self, request: CheckoutRequest) -> CreatedCheckout:
        self.requests.append(request)
        return CreatedCheckout(f"cs_{len(self.requests)}", "https://pay.example/c", "stripe")


def test_the_checkout_carries_back_in_its_return_urls(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    provider = Recording()
    row = billing.start_checkout(db, ann, "10k", provider, "/tasks/abc?x=1")
    (request,) = provider.requests
    assert request.success_url.endswith(
        "/tokens/success?session_id={CHECKOUT_SESSION_ID}&back=%2Ftasks%2Fabc%3Fx%3D1"
    )
    assert request.cancel_url.endswith("/tokens?canceled=1&back=%2Ftasks%2Fabc%3Fx%3D1")
    assert row.url == "https://pay.example/c"  # the provider's own page, as it answered

    billing.start_checkout(db, ann, "10k", provider, "//evil.example")
    billing.start_checkout(db, ann, "10k", provider)
    for plain in provider.requests[1:]:
        assert "back=" not in plain.success_url and "back=" not in plain.cancel_url
        assert plain.cancel_url.endswith("/tokens?canceled=1")

    test_row = billing.start_checkout(
        db, ann, "10k", TestCheckout("http://localhost:3000"), "/tasks/abc"
    )
    query = parse_qs(urlsplit(test_row.url).query)
    assert query["back"] == ["/tasks/abc"] and query["session_id"] == [test_row.id]


def _signed_in(db: Session) -> tuple[str, str]:
    user = make_user(db, "ann@example.com")
    return user, f"vgen_session={login_session(db, 'ann@example.com')}"


def _events(result: Any) -> list[Any]:
    async def go() -> list[Any]:
        if hasattr(result, "__aiter__"):
            return [e async for e in result if e is not None]
        value = await result
        return [] if value is None else [value]

    return asyncio.run(go())


def test_the_tokens_page_keeps_back_through_buy(database_url: str) -> None:
    with session_scope() as db:
        _user, cookie = _signed_in(db)
    state = ui_state(tokens_ui.TokensState, "/tokens?back=%2Ftasks%2Fabc", cookie=cookie)
    asyncio.run(state.on_load())
    assert state.back == "/tasks/abc"
    events = _events(state.buy("10k"))
    js = " ".join(str(e) for e in events)
    assert "/checkout/test?session_id=cs_test_" in js and "back=%2Ftasks%2Fabc" in js

    canceled = ui_state(
        tokens_ui.TokensState, "/tokens?canceled=1&back=%2Ftasks%2Fabc", cookie=cookie
    )
    asyncio.run(canceled.on_load())
    assert canceled.back == "/tasks/abc" and canceled.tokens_notice.startswith("Payment canceled")

    for bad in ("%2F%2Fevil.example", "https%3A%2F%2Fevil.example", "%2F%09%2Fevil.example"):
        other = ui_state(tokens_ui.TokensState, f"/tokens?back={bad}", cookie=cookie)
        asyncio.run(other.on_load())
        assert other.back == "", bad


def test_the_test_checkout_returns_with_back(database_url: str) -> None:
    with session_scope() as db:
        user, cookie = _signed_in(db)
        row = billing.start_checkout(db, user, "10k", get_payments(), "/tasks/abc")
    path = urlsplit(row.url)
    state = ui_state(payment_ui.TestCheckoutState, f"{path.path}?{path.query}", cookie=cookie)
    asyncio.run(state.on_load())
    assert state.checkout_tokens == "10,000"
    assert state.cancel_href == "/tokens?canceled=1&back=%2Ftasks%2Fabc"
    js = " ".join(str(e) for e in _events(state.pay()))
    assert f"/tokens/success?session_id={row.id}&back=%2Ftasks%2Fabc" in js

    plain = ui_state(payment_ui.TestCheckoutState, f"/checkout/test?session_id={row.id}", cookie)
    asyncio.run(plain.on_load())
    assert plain.cancel_href == "/tokens?canceled=1"


def test_the_success_page_offers_the_way_back(database_url: str) -> None:
    with session_scope() as db:
        user, cookie = _signed_in(db)
        row = billing.start_checkout(db, user, "10k", get_payments(), "/tasks/abc")
    state = ui_state(
        payment_ui.PaymentSuccessState,
        f"/tokens/success?session_id={row.id}&back=%2Ftasks%2Fabc",
        cookie=cookie,
    )
    asyncio.run(state.on_load())
    assert state.back == "/tasks/abc"
    evil = ui_state(
        payment_ui.PaymentSuccessState,
        f"/tokens/success?session_id={row.id}&back=%2F%2Fevil.example",
        cookie=cookie,
    )
    asyncio.run(evil.on_load())
    assert evil.back == ""
