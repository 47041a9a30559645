"""The purchase history of the Tokens page: each checkout, what it cost, what became of it."""

from __future__ import annotations

from dataclasses import dataclass

import reflex as rx

from vgen_app.config import money_label
from vgen_app.services import billing
from vgen_app.ui import format

# What each purchase status is called, and its badge colour.
STATUS = {
    "open": ("Waiting for payment", "blue"),
    "paid": ("Paid", "green"),
    "partly_refunded": ("Partly refunded", "amber"),
    "refunded": ("Refunded", "gray"),
    "disputed": ("Disputed", "red"),
    "failed": ("Failed", "red"),
    "expired": ("Expired", "gray"),
}


@dataclass
class PurchaseRow:
    session_id: str
    when_iso: str
    package: str  # "10,000 tokens"
    amount: str  # "$10"
    status: str
    status_label: str
    color: str
    detail: str  # "$2.50 refunded · 2,500 tokens taken back", "" if nothing happened after
    receipt: str  # Stripe's receipt page (or the test checkout's), "" if there is none


def purchase_row(p: billing.Purchase) -> PurchaseRow:
    label, color = STATUS.get(str(p.status), (str(p.status), "gray"))
    detail = []
    if p.refunded_cents:
        detail.append(f"{money_label(p.refunded_cents, p.currency)} refunded")
    if p.tokens_taken_back:
        detail.append(f"{p.tokens_taken_back:,} tokens taken back")
    return PurchaseRow(
        session_id=p.session_id,
        when_iso=format.iso(p.created_at),
        package=f"{p.tokens:,} tokens",
        amount=money_label(p.amount_cents, p.currency),
        status=str(p.status),
        status_label=label,
        color=color,
        detail=" · ".join(detail),
        receipt=p.receipt_url or "",
    )


# On a phone (< 30em) the amount goes under the package: the status and receipt stay in view.
_WIDE = ["none", "table-cell"]
_PHONE = ["block", "none"]


def _row(row: rx.Var) -> rx.Component:
    return rx.table.row(
        rx.table.cell(format.local_time(row.when_iso)),
        rx.table.cell(
            rx.text(row.package),
            rx.text(row.amount, size="1", color_scheme="gray", display=_PHONE),
        ),
        rx.table.cell(row.amount, justify="end", display=_WIDE),
        rx.table.cell(
            rx.vstack(
                rx.badge(
                    row.status_label,
                    color_scheme=row.color,
                    high_contrast=True,
                    class_name="purchase-status",
                ),
                rx.cond(row.detail != "", rx.text(row.detail, size="1", color_scheme="gray")),
                spacing="1",
                align="start",
            )
        ),
        rx.table.cell(
            rx.cond(
                row.receipt != "",
                rx.link(
                    "Receipt",
                    href=row.receipt,
                    is_external=True,
                    aria_label="Receipt of the purchase of " + row.package,
                ),
            )
        ),
        class_name="purchase-row",
        data_status=row.status,
    )


def purchases_table(rows: rx.Var) -> rx.Component:
    return rx.cond(
        rows.length() > 0,
        rx.box(
            rx.table.root(
                rx.table.header(
                    rx.table.row(
                        rx.table.column_header_cell("Date"),
                        rx.table.column_header_cell("Package"),
                        rx.table.column_header_cell("Amount", justify="end", display=_WIDE),
                        rx.table.column_header_cell("Status"),
                        rx.table.column_header_cell(""),
                    )
                ),
                rx.table.body(rx.foreach(rows, _row)),
                variant="surface",
                width="100%",
                id="purchases",
            ),
            overflow_x="auto",
            width="100%",
        ),
        rx.text("No purchases yet.", size="2", color_scheme="gray", id="purchases-empty"),
    )
