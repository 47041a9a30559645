"""My tasks: the user's tasks, newest first, a page at a time; filtered by the newest run's status
and by model, searched by name. The page, the filters and the search are in the URL
(`/?page=2&status=failed&model=lipsync&q=promo`), and the tab remembers them: "My tasks" opened
without a query (the task page's "← My tasks") shows the list as it was left."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import parse_qsl, urlencode

import reflex as rx

from vgen_app import catalog
from vgen_app.services import tasks
from vgen_app.ui import format, routes
from vgen_app.ui.layout import app_shell, link_button, notice_card, pager
from vgen_app.ui.session import SessionState

PER_PAGE = 20
ALL = "all"  # a select's "any" (a Radix select item's value cannot be empty)
SEARCH_MAX = 120  # a task name's length
# The status filter: its URL value (as tasks.list_tasks takes it) and its label.
STATUSES = [
    (ALL, "All statuses"),
    ("not_run", "Not run yet"),
    ("in_flight", "Queued or processing"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("canceled", "Canceled"),
]
QUERY_KEYS = ("page", "status", "model", "q")


@dataclass
class TaskRow:
    id: str
    name: str
    model: str
    status: str  # the last run's RunStatus, "" if never run
    status_label: str
    runs: int
    created: str
    created_iso: str  # UTC, ISO 8601: the page shows it in the browser's time zone
    href: str
    poster: str  # the newest result's frame (an owner-only route), "" if there is none
    poster_alt: str


def task_row(r: tasks.TaskRow) -> TaskRow:
    spec = catalog.get(r.task.model)
    return TaskRow(
        id=r.task.id,
        name=r.task.name,
        model=spec.title if spec else r.task.model,
        status=r.last_status or "",
        status_label=(r.last_status or "not run yet").replace("_", " "),
        runs=r.runs,
        created=format.when(r.task.created_at),
        created_iso=format.iso(r.task.created_at),
        href=f"/tasks/{r.task.id}",
        poster=routes.api(f"/api/media/poster/{r.poster_run_id}") if r.poster_run_id else "",
        poster_alt=f"{r.task.name} — latest result",
    )


def _page_number(value: str) -> int:
    return int(value) if value.isdigit() and len(value) < 7 else 1


def _one_of(value: str, allowed: set[str]) -> str:
    return value if value in allowed else ALL


class TaskListMemory(SessionState):
    """Not a page: what My tasks remembers while the tab shows another page (a page state
    forgets what it showed when the tab leaves it, SessionState.enter_page; this one is its
    parent and is never reset). Backend only."""

    _tasks_query: str = ""  # the list's last URL query ("" = the first page, unfiltered)
    _tasks_query_of: str = ""  # the user who chose it (another one in this tab starts afresh)


class DashboardState(TaskListMemory):
    PAGE: ClassVar[str] = routes.HOME
    task_rows: list[TaskRow] = []
    tasks_page: int = 1
    tasks_pages: int = 1
    tasks_total: int = 0  # the tasks that match the filters
    has_tasks: bool = False  # any task at all, whatever the filters
    status_filter: str = ALL
    model_filter: str = ALL
    search_text: str = ""  # as typed (the search itself is trimmed)

    @rx.var
    def filtered(self) -> bool:
        return (
            self.status_filter != ALL or self.model_filter != ALL or self.search_text.strip() != ""
        )

    # --- the query ---------------------------------------------------------------------------

    def _choose(self, params: dict[str, str]) -> None:
        """The list's page, filters and search from URL parameters (anything unknown: the
        default)."""
        self._put(
            tasks_page=_page_number(params.get("page", "")),
            status_filter=_one_of(params.get("status", ""), {v for v, _ in STATUSES}),
            model_filter=_one_of(params.get("model", ""), {m.id for m in catalog.models()}),
            search_text=params.get("q", "")[:SEARCH_MAX],
        )

    def _query(self) -> str:
        """The URL query of what the list shows ("" for the first page, unfiltered)."""
        params = {
            "page": str(self.tasks_page) if self.tasks_page > 1 else "",
            "status": "" if self.status_filter == ALL else self.status_filter,
            "model": "" if self.model_filter == ALL else self.model_filter,
            "q": self.search_text.strip(),
        }
        return urlencode({k: v for k, v in params.items() if v})

    def _show_query(self) -> rx.event.EventSpec | None:
        """Put the list's query in the address bar (no navigation, no new history entry), and
        remember it for this tab; nothing if the address already says it. Only while the tab
        is still on My tasks."""
        query = self._query()
        self._put(_tasks_query=query, _tasks_query_of=self._user_id)
        if query == self.page_url().query:
            return None
        url = routes.HOME + (f"?{query}" if query else "")
        return rx.call_script(
            "((url) => { if ((window.location.pathname.replace(/\\/+$/, '') || '/') === '/') "
            f"window.history.replaceState(window.history.state, '', url); }})({json.dumps(url)})"
        )

    async def _load_for_session(self) -> bool:
        """The session check and the page's read in one database call (the guard's combined
        form: one thread hop per event); False without a session."""
        user, page = await self.current_user_and(
            tasks.list_tasks,
            self.tasks_page,
            PER_PAGE,
            "" if self.status_filter == ALL else self.status_filter,
            "" if self.model_filter == ALL else self.model_filter,
            self.search_text,
        )
        if user is None or page is None:
            return False
        self._put(
            tasks_page=page.page,
            tasks_pages=page.pages,
            tasks_total=page.total,
            has_tasks=page.has_tasks,
        )
        self.task_rows = [task_row(r) for r in page.rows]  # always sent: the list refreshed
        return True

    # --- events ------------------------------------------------------------------------------

    @rx.event
    async def on_load(self):
        """The list the URL asks for; without a query, the one this tab showed last."""
        params = {k: v for k, v in self.page_url().query_parameters.items() if k in QUERY_KEYS}
        remembered_of = self._tasks_query_of
        restored = not params and self._tasks_query != "" and remembered_of == self._user_id
        self._choose(dict(parse_qsl(self._tasks_query)) if restored else params)
        if not await self._load_for_session():
            return self._login_redirect()
        if restored and remembered_of != self._user_id:  # someone else signed in in this tab
            self._choose({})
            await self._load_for_session()
        return self._show_query()

    async def _on_change(self):
        """A run started, moved on or ended (here or in another tab): the list shows it."""
        if await self._load_for_session():
            return self._show_query()  # the page may have moved (a task deleted elsewhere)
        return None

    async def _reload(self):
        if not await self._load_for_session():
            return self._login_redirect()
        return self._show_query()

    @rx.event
    async def go_to_page(self, page: int):
        self.tasks_page = int(page)
        return await self._reload()

    @rx.event
    async def filter_status(self, status: str):
        self.status_filter = _one_of(str(status), {v for v, _ in STATUSES})
        self.tasks_page = 1
        return await self._reload()

    @rx.event
    async def filter_model(self, model: str):
        self.model_filter = _one_of(str(model), {m.id for m in catalog.models()})
        self.tasks_page = 1
        return await self._reload()

    @rx.event
    async def search_tasks(self, text: str):
        self.search_text = str(text)[:SEARCH_MAX]
        self.tasks_page = 1
        return await self._reload()

    @rx.event
    async def clear_filters(self):
        self._choose({})
        return await self._reload()


# --- the page --------------------------------------------------------------------------------


def _empty() -> rx.Component:
    return notice_card(
        rx.icon("film", size=36, color="var(--gray-9)", aria_hidden="true"),
        rx.heading("No tasks yet", size="4", as_="h2"),
        rx.text(
            "Create a task, upload your video, audio or photo, and run it.", color_scheme="gray"
        ),
        link_button("Create your first task", href=routes.TASKS_NEW),
        padding="32px",
        id="tasks-empty",
    )


def _no_match() -> rx.Component:
    return notice_card(
        rx.icon("search_x", size=32, color="var(--gray-9)", aria_hidden="true"),
        rx.heading("No task matches these filters", size="4", as_="h2"),
        rx.text("Try another status, model or name, or show all your tasks.", color_scheme="gray"),
        rx.button("Clear filters", on_click=DashboardState.clear_filters, id="clear-filters"),
        padding="32px",
        id="tasks-no-match",
    )


def _select(
    value: rx.Var,
    on_change: rx.EventHandler,
    choices: list[tuple[str, str]],
    label: str,
    id_: str,
) -> rx.Component:
    return rx.select.root(
        rx.select.trigger(aria_label=label, id=id_, width="100%"),
        rx.select.content(*[rx.select.item(text, value=v) for v, text in choices]),
        value=value,
        on_change=on_change,
    )


def _filters() -> rx.Component:
    """Status, model, name: one row on a wide screen, stacked on a phone."""
    return rx.flex(
        rx.box(
            # A controlled input is debounced (Reflex wraps it; slots would be dropped): one
            # search a moment after typing stops.
            rx.input(
                value=DashboardState.search_text,
                on_change=DashboardState.search_tasks,
                placeholder="Search by name",
                aria_label="Search tasks by name",
                type="search",
                max_length=SEARCH_MAX,
                id="task-search",
                width="100%",
            ),
            flex="2 1 220px",
            min_width="0",
        ),
        rx.box(
            _select(
                DashboardState.status_filter,
                DashboardState.filter_status,
                STATUSES,
                "Filter by status",
                "filter-status",
            ),
            flex="1 1 160px",
            min_width="0",
        ),
        rx.box(
            _select(
                DashboardState.model_filter,
                DashboardState.filter_model,
                [(ALL, "All models")] + [(m.id, m.title) for m in catalog.models()],
                "Filter by model",
                "filter-model",
            ),
            flex="1 1 160px",
            min_width="0",
        ),
        rx.cond(
            DashboardState.filtered,
            rx.button(
                "Clear filters",
                on_click=DashboardState.clear_filters,
                variant="ghost",
                color_scheme="gray",
                id="clear-filters-inline",
            ),
        ),
        role="search",
        aria_label="Filter tasks",
        spacing="3",
        wrap="wrap",
        align="center",
        width="100%",
        id="task-filters",
    )


# Columns a phone (< 30em) does without: the table stays within the screen.
_WIDE = ["none", "table-cell"]
_THUMB = {"width": "56px", "height": "32px", "border_radius": "var(--radius-2)", "flex": "none"}


def _thumbnail(row: rx.Var) -> rx.Component:
    """The newest result's frame, or a placeholder while there is none."""
    return rx.cond(
        row.poster != "",
        rx.image(src=row.poster, alt=row.poster_alt, object_fit="cover", loading="lazy", **_THUMB),
        rx.center(
            rx.icon("film", size=16, color="var(--gray-9)", aria_hidden="true"),
            background="var(--gray-3)",
            **_THUMB,
        ),
    )


def _table() -> rx.Component:
    return rx.table.root(
        rx.table.header(
            rx.table.row(
                rx.table.column_header_cell("Task"),
                rx.table.column_header_cell("Model", display=_WIDE),
                rx.table.column_header_cell("Last run"),
                rx.table.column_header_cell("Runs", display=_WIDE),
                rx.table.column_header_cell("Created"),
            )
        ),
        rx.table.body(
            rx.foreach(
                DashboardState.task_rows,
                lambda row: rx.table.row(
                    rx.table.row_header_cell(
                        rx.hstack(
                            rx.flex(_thumbnail(row), display=["none", "flex"]),  # not on a phone
                            # Names wrap between words; a word breaks only when it is wider
                            # than the column can be (max_width caps its min-content share, so
                            # a phone's table keeps its three columns in view: "anywhere" broke
                            # "Usable" mid-word).
                            rx.link(
                                row.name,
                                href=row.href,
                                overflow_wrap="break-word",
                                max_width=["32vw", "45vw"],
                            ),
                            align="center",
                            spacing="2",
                            min_width="0",
                        ),
                    ),
                    rx.table.cell(row.model, display=_WIDE),
                    rx.table.cell(format.status_badge(row.status, row.status_label)),
                    rx.table.cell(row.runs, display=_WIDE),
                    rx.table.cell(format.local_time(row.created_iso)),
                    align="center",
                ),
            )
        ),
        variant="surface",
        width="100%",
        id="tasks-table",
    )


def dashboard_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.hstack(
                rx.heading("My tasks", size="7", as_="h1"),
                rx.spacer(),
                link_button(
                    rx.icon("plus", size=16), "New task", href=routes.TASKS_NEW, id="new-task"
                ),
                width="100%",
                align="center",
            ),
            rx.cond(
                DashboardState.has_tasks,
                rx.vstack(
                    _filters(),
                    rx.cond(
                        DashboardState.tasks_total == 0,
                        _no_match(),
                        rx.vstack(
                            _table(),
                            rx.hstack(
                                pager(
                                    DashboardState.tasks_page,
                                    DashboardState.tasks_pages,
                                    DashboardState.go_to_page,
                                ),
                                rx.text(
                                    DashboardState.tasks_total,
                                    rx.cond(DashboardState.tasks_total == 1, " task", " tasks"),
                                    size="2",
                                    color_scheme="gray",
                                    id="tasks-count",
                                ),
                                align="center",
                                justify="between",
                                wrap="wrap",
                                width="100%",
                            ),
                            width="100%",
                            spacing="3",
                        ),
                    ),
                    width="100%",
                    spacing="3",
                ),
                _empty(),
            ),
            spacing="5",
            width="100%",
        )
    )
