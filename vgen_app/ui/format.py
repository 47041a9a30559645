"""How values read on the pages: times, sizes, run statuses, full-page navigations."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime

import reflex as rx

from vgen_app.models import RunStatus

# The badge colour of each run status; anything else (never run) is gray.
STATUS_COLOR = {
    RunStatus.SUCCEEDED: "green",
    RunStatus.FAILED: "red",
    RunStatus.PROCESSING: "blue",
}


# A list refresh formats the same few timestamps again and again: each formatted once.
@functools.lru_cache(maxsize=8192)
def tab_title(name: str) -> str:
    """What a browser tab says: the page's (or the task's) name, then the product's."""
    return f"{name} · vgen"


def when(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


@functools.lru_cache(maxsize=8192)
def iso(value: datetime) -> str:
    """UTC, ISO 8601 with the offset: what the browser turns into its local time."""
    return value.astimezone(UTC).isoformat(timespec="seconds")


def when_utc(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC")


def size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def status_badge(status: rx.Var, label: rx.Var | None = None) -> rx.Component:
    return rx.badge(
        label if label is not None else status,
        color_scheme=rx.match(
            status, *((s.value, color) for s, color in STATUS_COLOR.items()), "gray"
        ),
        variant="soft",
        high_contrast=True,  # the soft badges' own text is below 4.5:1 at this size
    )


# The browser's own time zone and locale: `iso` is UTC with its offset (format.iso), so
# `new Date(iso)` is the right instant wherever the browser is.
_LOCAL = rx.vars.FunctionStringVar.create(
    "((iso) => { const d = new Date(iso); return isNaN(d) ? '' : d.toLocaleString([], "
    "{year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit'}); })"
)
_UTC = rx.vars.FunctionStringVar.create(
    "((iso) => (iso || '').slice(0, 16).replace('T', ' ') + ' UTC')"
)


def local_time(iso_var: rx.Var, **props) -> rx.Component:
    """A moment in the browser's local time; the UTC time on hover (its title) and in
    `datetime`. `iso_var` is a row's ISO 8601 UTC field (format.iso)."""
    iso_str = iso_var.to(str)
    return rx.el.time(
        _LOCAL.call(iso_str).to(str),
        date_time=iso_str,
        title=_UTC.call(iso_str).to(str),
        **props,
    )


def full_redirect(url: str | rx.Var) -> rx.event.EventSpec:
    """A full document load (leaving the app, or a route that answers with an attachment)."""
    if isinstance(url, rx.Var):
        return rx.call_script("window.location.assign(" + url.to(str).to_string() + ")")
    return rx.call_script(f"window.location.assign({json.dumps(url)})")
