"""My tasks: the user's tasks, newest first, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import reflex as rx

from vgen_app import catalog
from vgen_app.services import tasks
from vgen_app.ui import format, routes
from vgen_app.ui.layout import app_shell, link_button, notice_card, pager
from vgen_app.ui.session import SessionState

PER_PAGE = 20


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
    )


class DashboardState(SessionState):
    PAGE: ClassVar[str] = routes.HOME
    task_rows: list[TaskRow] = []
    tasks_page: int = 1
    tasks_pages: int = 1
    tasks_total: int = 0

    async def _load_for_session(self) -> bool:
        """The session check and the page's read in one database call (the guard's combined
        form: one thread hop per event); False without a session."""
        user, page = await self.current_user_and(tasks.list_tasks, self.tasks_page, PER_PAGE)
        if user is None or page is None:
            return False
        self.tasks_page, self.tasks_pages, self.tasks_total = page.page, page.pages, page.total
        self.task_rows = [task_row(r) for r in page.rows]
        return True

    @rx.event
    async def on_load(self):
        self.tasks_page = 1
        if not await self._load_for_session():
            return self._login_redirect()

    async def _on_change(self):
        """A run started, moved on or ended (here or in another tab): the list shows it."""
        await self._load_for_session()

    @rx.event
    async def go_to_page(self, page: int):
        self.tasks_page = int(page)
        if not await self._load_for_session():
            return self._login_redirect()


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


# Columns a phone (< 30em) does without: the table stays within the screen.
_WIDE = ["none", "table-cell"]


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
                        rx.link(row.name, href=row.href, overflow_wrap="anywhere")
                    ),
                    rx.table.cell(row.model, display=_WIDE),
                    rx.table.cell(format.status_badge(row.status, row.status_label)),
                    rx.table.cell(row.runs, display=_WIDE),
                    rx.table.cell(format.local_time(row.created_iso)),
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
                DashboardState.tasks_total == 0,
                _empty(),
                rx.vstack(
                    _table(),
                    pager(
                        DashboardState.tasks_page,
                        DashboardState.tasks_pages,
                        DashboardState.go_to_page,
                    ),
                    width="100%",
                    spacing="3",
                ),
            ),
            spacing="5",
            width="100%",
        )
    )
