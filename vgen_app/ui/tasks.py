"""My tasks, a new task, and the task page: uploads with progress, Run / Regenerate, live runs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import reflex as rx

from vgen_app import catalog
from vgen_app.config import get_settings
from vgen_app.db import run_db
from vgen_app.models import RunStatus
from vgen_app.services import runs, tasks, uploads
from vgen_app.ui import routes
from vgen_app.ui.layout import app_shell, error_callout, pager
from vgen_app.ui.session import SessionState

PER_PAGE = 20
# Every slot name any model uses: one static upload zone each, shown when the task has that slot.
ALL_SLOTS = sorted({s.name for m in catalog.models() for s in m.slots})
WATCH_SECONDS = 1.0
RUNS_SHOWN = 20  # the task page lists the newest runs; older ones stay in the database

STATUS_COLORS = {
    "queued": "gray",
    "processing": "blue",
    "succeeded": "green",
    "failed": "red",
    "": "gray",
}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# --- my tasks ----------------------------------------------------------------------------------------


class DashboardState(SessionState):
    task_rows: list[dict[str, str]] = []
    tasks_page: int = 1
    tasks_pages: int = 1
    tasks_total: int = 0

    async def _load_for_session(self) -> bool:
        """Check the session and read the page in one database call; False without a session."""
        user, page = await self.current_user_and(tasks.list_tasks, self.tasks_page, PER_PAGE)
        if user is None or page is None:
            return False
        self.tasks_page, self.tasks_pages, self.tasks_total = page.page, page.pages, page.total
        self.task_rows = [
            {
                "id": r.task.id,
                "name": r.task.name,
                "model": (
                    catalog.get(r.task.model).title if catalog.get(r.task.model) else r.task.model
                ),
                "status": r.last_status or "",
                "status_label": (r.last_status or "not run yet").replace("_", " "),
                "runs": str(r.runs),
                "created": _when(r.task.created_at),
                "href": f"/tasks/{r.task.id}",
            }
            for r in page.rows
        ]
        return True

    @rx.event
    async def on_load(self):
        self.tasks_page = 1
        if not await self._load_for_session():
            return self._login_redirect()

    @rx.event
    async def go_to_page(self, page: int):
        self.tasks_page = int(page)
        if not await self._load_for_session():
            return self._login_redirect()


class NewTaskState(SessionState):
    new_task_error: str = ""

    @rx.var
    def model_cards(self) -> list[dict[str, str]]:
        return [
            {
                "id": m.id,
                "title": m.title,
                "description": m.description,
                "inputs": " + ".join(s.label for s in m.slots),
                "price": f"{m.price_per_second:,} tokens per second of video, at least {m.min_price:,}",
            }
            for m in catalog.models()
        ]

    @rx.event
    async def create(self, form: dict):
        self.new_task_error = ""
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        try:
            task = await run_db(
                tasks.create_task, user.user_id, form.get("model", ""), form.get("name", "")
            )
        except tasks.TaskError as exc:
            self.new_task_error = exc.message
            return
        return rx.redirect(f"/tasks/{task.id}")


# --- the task page ------------------------------------------------------------------------------------


class TaskState(SessionState):
    task_id: str = ""
    task_name: str = ""
    task_model: str = ""
    task_missing: bool = False
    task_error: str = ""
    run_error: str = ""
    run_needs_topup: bool = False
    price_label: str = ""
    can_run: bool = False
    in_flight: bool = False
    # Per slot name (all of ALL_SLOTS are always present as keys):
    slot_info: dict[str, dict[str, str]] = {}
    upload_pct: dict[str, int] = {}
    upload_error: dict[str, str] = {}
    uploading: dict[str, bool] = {}
    run_rows: list[dict[str, str]] = []  # the newest RUNS_SHOWN
    runs_total: int = 0
    _watcher: str = ""

    def _path_task_id(self) -> str:
        parts = [p for p in (self.router.url.path or "").split("/") if p]
        return parts[1] if len(parts) >= 2 and parts[0] == "tasks" else ""

    def _reset_slots(self) -> None:
        self.slot_info = {name: {"shown": "", "order": "0"} for name in ALL_SLOTS}
        self.upload_pct = dict.fromkeys(ALL_SLOTS, 0)
        self.upload_error = dict.fromkeys(ALL_SLOTS, "")
        self.uploading = dict.fromkeys(ALL_SLOTS, False)

    async def _refresh(self, user_id: str) -> None:
        """Reload the task, its inputs and its newest runs (owner only): one thread hop."""
        self._show(await run_db(tasks.task_view, user_id, self.task_id, RUNS_SHOWN))

    def _show(self, view: tasks.TaskView) -> None:
        task, inputs, run_list = view.task, view.inputs, view.runs
        spec = catalog.get(task.model)
        self.task_name, self.task_model = task.name, spec.title if spec else task.model
        info: dict[str, dict[str, str]] = {name: {"shown": "", "order": "0"} for name in ALL_SLOTS}
        for order, slot in enumerate(spec.slots if spec else []):
            item = inputs.get(slot.name)
            limits = f"{', '.join(slot.formats)} · up to {slot.max_mb} MB"
            if slot.max_seconds:
                limits += f" · up to {slot.max_seconds} s"
            media = item.media if item else {}
            details = ""
            if item:
                parts = [
                    media.get("container") or "",
                    media.get("video_codec") or "",
                    media.get("audio_codec") or "",
                ]
                if media.get("duration_s"):
                    parts.append(f"{media['duration_s']:.1f} s")
                if media.get("width"):
                    parts.append(f"{media['width']}×{media['height']}")
                details = " · ".join(p for p in parts if p) + f" · {_size(item.size_bytes)}"
            info[slot.name] = {
                "shown": "1",
                "order": str(order),
                "label": slot.label,
                "kind": slot.kind,
                "limits": limits,
                "filename": item.filename if item else "",
                "details": details,
            }
        self.slot_info = info
        price = tasks.price_of(task, inputs)
        self.price_label = f"{price:,} tokens" if price is not None else ""
        self.in_flight = view.in_flight
        self.runs_total = view.runs_total
        self.can_run = price is not None and not self.in_flight
        api = routes.api("")
        self.run_rows = [
            {
                "id": r.id,
                "attempt": str(r.attempt),
                "status": r.status,
                "progress": str(round((r.progress or 0) * 100)),
                "price": f"{r.price:,}",
                "created": _when(r.created_at),
                "error": r.error or "",
                "refunded": "refunded" if r.refunded_at else "",
                "download": f"{api}/api/runs/{r.id}/result"
                if r.status == RunStatus.SUCCEEDED
                else "",
            }
            for r in run_list
        ]

    @rx.event
    async def on_load(self):
        self.task_id = self._path_task_id()
        self.task_missing, self.task_error, self.run_error = False, "", ""
        self.run_needs_topup = False
        self._reset_slots()
        self.run_rows = []
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        try:
            await self._refresh(user.user_id)
        except tasks.NotFound:
            self.task_missing = True
            return
        if self.in_flight:
            return TaskState.watch

    @rx.event(background=True)
    async def watch(self):
        """Push run status and progress to this page while a run is in flight."""
        me = uuid.uuid4().hex
        async with self:
            if self._watcher:
                return
            self._watcher = me
            task_id = self.task_id
        try:
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                async with self:
                    if self.task_id != task_id:
                        return
                    try:  # the session check and the page's read: one database call a tick
                        user, view = await self.current_user_and(
                            tasks.task_view, task_id, RUNS_SHOWN
                        )
                    except tasks.NotFound:
                        return
                    if user is None or view is None:  # logged out, blocked or reset meanwhile
                        to_login = self._login_redirect()
                    else:
                        to_login = None
                        self._show(view)
                        if not self.in_flight:
                            await self.current_user()  # a failed run's refund shows in the header
                            return
                if to_login is not None:
                    yield to_login
                    return
        finally:
            async with self:
                if self._watcher == me:
                    self._watcher = ""

    @rx.event
    async def run(self):
        self.run_error, self.run_needs_topup = "", False
        user = await self.current_user()
        if user is None:
            return self._login_redirect()
        try:
            await run_db(runs.start_run, user.user_id, self.task_id)
        except runs.InsufficientTokens as exc:
            self.run_error, self.run_needs_topup = exc.message, True
            await self.current_user()
            return
        except tasks.TaskError as exc:
            self.run_error = exc.message
            return
        await self._refresh(user.user_id)
        await self.current_user()  # the debit shows in the header
        return TaskState.watch

    @rx.event
    def upload_progress(self, progress: dict, slot: str):
        if slot in self.upload_pct:
            self.upload_pct[slot] = int(float(progress.get("progress", 0)) * 100)

    @rx.event(background=True)
    async def upload_slot(self, chunks: rx.UploadChunkIterator, slot: str):
        """Stream one file into a slot: never whole in memory; size enforced while streaming."""
        async with self:
            user = await self.current_user()
            to_login = self._login_redirect() if user is None else None
            task_id = self.task_id
            if user is not None and slot in self.upload_error:
                self.upload_error[slot] = ""
                self.uploading[slot] = True
        if to_login is not None:
            yield to_login
            return
        if slot not in ALL_SLOTS:
            return
        error = ""
        try:
            _task, spec_slot = await run_db(tasks.upload_target, user.user_id, task_id, slot)
            error = await _spool_and_ingest(chunks, user.user_id, task_id, spec_slot)
        except tasks.TaskError as exc:
            error = exc.message
        async with self:
            self.uploading[slot] = False
            self.upload_pct[slot] = 0 if error else 100
            self.upload_error[slot] = error
            try:
                await self._refresh(user.user_id)
            except tasks.NotFound:
                self.task_missing = True


async def _spool_and_ingest(
    chunks: rx.UploadChunkIterator, user_id: str, task_id: str, slot: catalog.Slot
) -> str:
    """Write the stream to a spool file (off the event loop), then probe/store it. '' if accepted."""
    spool_dir = get_settings().upload_tmp_dir
    await asyncio.to_thread(spool_dir.mkdir, parents=True, exist_ok=True)
    spooled = spool_dir / f"{uuid.uuid4().hex}.part"
    handle = await asyncio.to_thread(open, spooled, "wb")
    size, filename, error = 0, "", ""
    try:
        async for chunk in chunks:
            if filename and chunk.filename != filename:
                error = "Upload one file at a time."
                break
            filename = chunk.filename
            size += len(chunk.data)
            if size > slot.max_bytes:
                error = f"The file is larger than {slot.max_mb} MB."
                break
            await asyncio.to_thread(handle.write, chunk.data)
    finally:
        await asyncio.to_thread(handle.close)
    if error or not filename:
        await asyncio.to_thread(spooled.unlink, True)
        return error or "No file was received."
    try:
        await asyncio.to_thread(
            uploads.ingest, user_id, task_id, slot.name, filename, spooled, size
        )
    except tasks.TaskError as exc:
        return exc.message
    return ""


# --- pages ------------------------------------------------------------------------------------------------


def _status_badge(status: rx.Var, label: rx.Var | None = None) -> rx.Component:
    return rx.badge(
        label if label is not None else status,
        color_scheme=rx.match(
            status, ("succeeded", "green"), ("failed", "red"), ("processing", "blue"), "gray"
        ),
        variant="soft",
    )


def dashboard_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.hstack(
                rx.heading("My tasks", size="7", as_="h1"),
                rx.spacer(),
                rx.link(
                    rx.button(rx.icon("plus", size=16), "New task", id="new-task"),
                    href=routes.TASKS_NEW,
                ),
                width="100%",
                align="center",
            ),
            rx.cond(
                DashboardState.tasks_total == 0,
                rx.card(
                    rx.vstack(
                        rx.icon("film", size=36, color="var(--gray-9)"),
                        rx.heading("No tasks yet", size="4", as_="h2"),
                        rx.text(
                            "Create a task, upload your video, audio or photo, and run it.",
                            color_scheme="gray",
                        ),
                        rx.link(rx.button("Create your first task"), href=routes.TASKS_NEW),
                        align="center",
                        spacing="3",
                        padding="32px",
                    ),
                    width="100%",
                    id="tasks-empty",
                ),
                rx.vstack(
                    rx.table.root(
                        rx.table.header(
                            rx.table.row(
                                rx.table.column_header_cell("Task"),
                                rx.table.column_header_cell("Model"),
                                rx.table.column_header_cell("Last run"),
                                rx.table.column_header_cell("Runs"),
                                rx.table.column_header_cell("Created"),
                            )
                        ),
                        rx.table.body(
                            rx.foreach(
                                DashboardState.task_rows,
                                lambda row: rx.table.row(
                                    rx.table.cell(rx.link(row["name"], href=row["href"])),
                                    rx.table.cell(row["model"]),
                                    rx.table.cell(
                                        _status_badge(row["status"], row["status_label"])
                                    ),
                                    rx.table.cell(row["runs"]),
                                    rx.table.cell(row["created"]),
                                ),
                            )
                        ),
                        variant="surface",
                        width="100%",
                        id="tasks-table",
                    ),
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


def new_task_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.heading("New task", size="7", as_="h1"),
            error_callout(NewTaskState.new_task_error),
            rx.form(
                rx.vstack(
                    rx.text("Choose a model", size="3", weight="medium"),
                    rx.radio_cards.root(
                        rx.foreach(
                            NewTaskState.model_cards,
                            lambda m: rx.radio_cards.item(
                                rx.vstack(
                                    rx.text(m["title"], weight="bold"),
                                    rx.text(m["description"], size="2", color_scheme="gray"),
                                    rx.text("Inputs: ", m["inputs"], size="1"),
                                    rx.text(m["price"], size="1", color_scheme="gray"),
                                    spacing="1",
                                    align="start",
                                ),
                                value=m["id"],
                                id="model-" + m["id"].to(str),
                            ),
                        ),
                        name="model",
                        default_value="lipsync",
                        columns={"initial": "1", "sm": "3"},
                        width="100%",
                    ),
                    rx.text(
                        "Name (optional)", size="2", weight="medium", as_="label", html_for="name"
                    ),
                    rx.input(
                        name="name",
                        id="name",
                        placeholder="e.g. Product promo, Spanish",
                        max_length=120,
                        width="100%",
                    ),
                    rx.button(
                        "Create task",
                        type="submit",
                        size="3",
                        id="create-task",
                        disabled=~SessionState.is_hydrated,
                    ),
                    spacing="3",
                    width="100%",
                    align="start",
                ),
                on_submit=NewTaskState.create,
                reset_on_submit=False,
                method="post",
                width="100%",
            ),
            spacing="4",
            width="100%",
        )
    )


def _slot_card(name: str) -> rx.Component:
    info = TaskState.slot_info[name]
    upload_id = f"upload-{name}"
    return rx.cond(
        info["shown"] == "1",
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.icon(
                        {"video": "video", "audio": "audio-lines", "image": "image"}.get(
                            name, "file"
                        ),
                        size=18,
                    ),
                    rx.text(info["label"], weight="bold"),
                    align="center",
                ),
                rx.text(info["limits"], size="1", color_scheme="gray"),
                rx.cond(
                    info["filename"] != "",
                    rx.callout(
                        rx.text(rx.text.strong(info["filename"]), " — ", info["details"]),
                        icon="circle_check",
                        color_scheme="green",
                        size="1",
                        width="100%",
                        id=f"slot-{name}-file",
                    ),
                ),
                rx.upload.root(
                    rx.vstack(
                        rx.icon("upload", size=20, color="var(--gray-9)"),
                        rx.text(
                            rx.cond(
                                info["filename"] != "",
                                "Drop a file to replace it, or click",
                                "Drop a file here, or click to choose",
                            ),
                            size="2",
                            color_scheme="gray",
                        ),
                        align="center",
                        spacing="1",
                    ),
                    id=upload_id,
                    max_files=1,
                    multiple=False,
                    disabled=TaskState.in_flight | TaskState.uploading[name],
                    on_drop=TaskState.upload_slot(
                        rx.upload_files_chunk(
                            upload_id=upload_id,
                            on_upload_progress=lambda p: TaskState.upload_progress(p, name),
                        ),
                        name,
                    ),
                    border="1px dashed var(--gray-7)",
                    border_radius="8px",
                    padding="16px",
                    width="100%",
                    cursor="pointer",
                ),
                rx.cond(
                    TaskState.uploading[name],
                    rx.vstack(
                        rx.progress(value=TaskState.upload_pct[name], width="100%"),
                        rx.text("Uploading… ", TaskState.upload_pct[name], "%", size="1"),
                        width="100%",
                        id=f"slot-{name}-progress",
                    ),
                ),
                rx.cond(
                    TaskState.upload_error[name] != "",
                    rx.callout(
                        TaskState.upload_error[name],
                        icon="triangle_alert",
                        color_scheme="red",
                        size="1",
                        width="100%",
                        id=f"slot-{name}-error",
                    ),
                ),
                spacing="2",
                width="100%",
            ),
            flex="1",
            min_width="260px",
            order=info["order"],  # the model's slot order, not the alphabetical one
        ),
    )


def _run_row(row: rx.Var) -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.vstack(
                rx.hstack(
                    rx.text("Attempt ", row["attempt"], weight="bold"),
                    _status_badge(row["status"]),
                    rx.cond(row["refunded"] != "", rx.badge("refunded", color_scheme="amber")),
                    align="center",
                    spacing="2",
                ),
                rx.text(
                    row["created"], " · ", row["price"], " tokens", size="1", color_scheme="gray"
                ),
                rx.cond(
                    (row["status"] == "processing") | (row["status"] == "queued"),
                    rx.hstack(
                        rx.progress(value=row["progress"].to(int), width="200px"),
                        rx.text(row["progress"], "%", size="1"),
                        align="center",
                    ),
                ),
                rx.cond(row["error"] != "", rx.text(row["error"], size="2", color_scheme="red")),
                spacing="1",
                align="start",
            ),
            rx.spacer(),
            rx.cond(
                row["download"] != "",
                # A full document load (the app's router would treat a link as a page):
                # the route answers with an attachment, so the page stays where it is.
                rx.button(
                    rx.icon("download", size=14),
                    "Download",
                    variant="soft",
                    on_click=rx.call_script(
                        "window.location.assign(" + row["download"].to(str).to_string() + ")"
                    ),
                    data_href=row["download"],
                    id="download-" + row["attempt"].to(str),
                ),
            ),
            align="center",
            width="100%",
        ),
        width="100%",
        id="run-" + row["attempt"].to(str),
        data_status=row["status"],
    )


def task_page() -> rx.Component:
    return app_shell(
        rx.cond(
            TaskState.task_missing,
            rx.card(
                rx.vstack(
                    rx.heading("Task not found", size="5", as_="h1"),
                    rx.text("It does not exist, or it is not yours.", color_scheme="gray"),
                    rx.link(rx.button("My tasks"), href=routes.HOME),
                    align="center",
                    padding="24px",
                ),
                width="100%",
                id="task-missing",
            ),
            rx.vstack(
                rx.link("← My tasks", href=routes.HOME, size="2"),
                rx.hstack(
                    rx.heading(TaskState.task_name, size="7", as_="h1", id="task-name"),
                    rx.badge(TaskState.task_model, size="2"),
                    align="center",
                    spacing="3",
                ),
                rx.heading("Materials", size="4", as_="h2"),
                rx.flex(
                    *[_slot_card(name) for name in ALL_SLOTS], gap="3", wrap="wrap", width="100%"
                ),
                rx.card(
                    rx.hstack(
                        rx.vstack(
                            rx.text("Price of a run", size="2", color_scheme="gray"),
                            rx.text(
                                rx.cond(
                                    TaskState.price_label != "",
                                    TaskState.price_label,
                                    "upload every input to see it",
                                ),
                                weight="bold",
                                id="run-price",
                            ),
                            rx.text(
                                "Your balance: ",
                                SessionState.balance_label,
                                " tokens",
                                size="2",
                                color_scheme="gray",
                            ),
                            spacing="1",
                        ),
                        rx.spacer(),
                        rx.button(
                            rx.cond(TaskState.run_rows.length() > 0, "Regenerate", "Run"),
                            rx.icon("play", size=16),
                            size="3",
                            disabled=~TaskState.can_run,
                            on_click=TaskState.run,
                            id="run-button",
                        ),
                        align="center",
                        width="100%",
                    ),
                    width="100%",
                ),
                rx.cond(
                    TaskState.run_error != "",
                    rx.callout(
                        rx.hstack(
                            rx.text(TaskState.run_error),
                            rx.cond(
                                TaskState.run_needs_topup,
                                rx.link("Buy tokens", href=routes.TOKENS, weight="bold"),
                            ),
                            spacing="2",
                        ),
                        icon="triangle_alert",
                        color_scheme="red",
                        width="100%",
                        id="run-error",
                    ),
                ),
                rx.heading("Runs", size="4", as_="h2"),
                rx.cond(
                    TaskState.run_rows.length() == 0,
                    rx.text(
                        "No runs yet. Upload the materials and press Run.",
                        color_scheme="gray",
                        size="2",
                    ),
                    rx.vstack(
                        rx.foreach(TaskState.run_rows, _run_row),
                        rx.cond(
                            TaskState.runs_total > TaskState.run_rows.length(),
                            rx.text(
                                f"The newest {RUNS_SHOWN} of ",
                                TaskState.runs_total,
                                " runs are shown.",
                                color_scheme="gray",
                                size="2",
                                id="runs-more",
                            ),
                        ),
                        width="100%",
                        spacing="2",
                        id="runs",
                    ),
                ),
                spacing="4",
                width="100%",
            ),
        )
    )
