"""The Tokens page's data in one read (one thread hop and one session per event): a page of the
balance history and, with the page's first load, the purchases and the balance chart."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from vgen_app.db import raw_read
from vgen_app.services import ledger, purchases
from vgen_app.services.ledger import HistoryPage
from vgen_app.services.purchases import Purchase


@dataclass(frozen=True)
class TokensView:
    history: HistoryPage
    purchases: list[Purchase] | None  # None: not read (paging the history re-reads neither)
    series: list[tuple[str, int]] | None


@raw_read
def tokens_view(
    db: Session, user_id: str, page: int = 1, per_page: int = 20, with_chart: bool = True
) -> TokensView:
    history = ledger.history(db, user_id, page, per_page)
    if not with_chart:
        return TokensView(history, None, None)
    return TokensView(history, purchases.purchases(db, user_id), ledger.balance_series(db, user_id))
