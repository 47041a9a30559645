"""The task page's state: the task, its inputs (uploads with progress), Run / Regenerate, and its
runs followed live while one is in flight. The page itself is `ui/task_page.py`."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import ClassVar

import reflex as rx

from vgen_app import catalog
from vgen_app.db import run_db
from vgen_app.models import Run, RunStatus, TaskInput
from vgen_app.services import runs, tasks, uploads
from vgen_app.ui import format, routes
from vgen_app.ui.session import SessionState, signed_in

# Every slot name any model uses: one static upload zone each, shown when the task has that slot.
ALL_SLOTS = sorted({s.name for m in catalog.models() for s in m.slots})
WATCH_SECONDS = 1.0
RUNS_SHOWN = 20  # the task page lists the newest runs; older ones stay in the database


@dataclass
class SlotView:
    """One input slot as the page shows it (every name of ALL_SLOTS has one; `shown` if the
    task's model uses it)."""

    shown: bool = False
    order: int = 0
    label: str = ""
    kind: str = ""
    limits: str = ""
    filename: str = ""
    details: str = ""
    media_url: str = ""  # the owner-only media route of the stored input: its preview


@dataclass
class RunRow:
    id: str
    attempt: int
    status: str  # a RunStatus
    active: bool  # queued or processing
    progress: int  # percent
    price: str
    created: str
    created_iso: str  # UTC, ISO 8601: the page shows it in the browser's time zone
    error: str
    refunded: bool
    download: str  # the download route, "" until it succeeded
    play: str  # the media route of the result (plays in the page), "" until it succeeded
    poster: str  # a frame of the result, "" when there is none
    cancelable: bool  # queued, not handed to the generation service yet


def _media_details(item: TaskInput) -> str:
    media = item.media or {}
    parts = [media.get("container") or "", media.get("video_codec") or ""]
    parts.append(media.get("audio_codec") or "")
    if media.get("duration_s"):
        parts.append(f"{media['duration_s']:.1f} s")
    if media.get("width"):
        parts.append(f"{media['width']}×{media['height']}")
    return " · ".join(p for p in parts if p) + f" · {format.size(item.size_bytes)}"


def _input_url(item: TaskInput) -> str:
    # The slot's row stays when its file is replaced: the version makes the player load the new one.
    return routes.api(f"/api/media/input/{item.id}?v={int(item.created_at.timestamp())}")


def slot_views(spec: catalog.ModelSpec | None, inputs: dict) -> dict[str, SlotView]:
    views = {name: SlotView() for name in ALL_SLOTS}
    for order, slot in enumerate(spec.slots if spec else []):
        item = inputs.get(slot.name)
        limits = f"{', '.join(slot.formats)} · up to {slot.max_mb} MB"
        if slot.max_seconds:
            limits += f" · up to {slot.max_seconds} s"
        views[slot.name] = SlotView(
            shown=True,
            order=order,
            label=slot.label,
            kind=slot.kind,
            limits=limits,
            filename=item.filename if item else "",
            details=_media_details(item) if item else "",
            media_url=_input_url(item) if item else "",
        )
    return views


def run_row(r: Run) -> RunRow:
    done = r.status == RunStatus.SUCCEEDED
    return RunRow(
        id=r.id,
        attempt=r.attempt,
        status=RunStatus(r.status).value,
        active=r.status in tasks.IN_FLIGHT,
        progress=round((r.progress or 0) * 100),
        price=f"{r.price:,}",
        created=format.when(r.created_at),
        created_iso=format.iso(r.created_at),
        error=r.error or "",
        refunded=r.refunded_at is not None,
        download=routes.api(f"/api/runs/{r.id}/result") if done else "",
        play=routes.api(f"/api/media/result/{r.id}") if done else "",
        poster=routes.api(f"/api/media/poster/{r.id}") if done and r.poster_key else "",
        cancelable=r.status == RunStatus.QUEUED and not r.provider_job_id,
    )


# While an upload streams (its progress shows), leaving the page (reload, close, another address)
# asks first. Installed when an upload starts; it asks only while a progress bar is on the page.
_LEAVE_GUARD = rx.call_script(
    "window.onbeforeunload = (e) => {"
    ' if (document.querySelector(\'[id^="slot-"][id$="-progress"]\')) {'
    " e.preventDefault(); e.returnValue = ''; } }"
)


class TaskState(SessionState):
    PAGE: ClassVar[str] = routes.TASK
    task_id: str = ""
    task_name: str = ""
    task_model: str = ""
    task_missing: bool = False
    task_error: str = ""
    run_error: str = ""
    run_needs_topup: bool = False
    price_label: str = ""
    price_note: str = ""  # how the price is made: per second, or the minimum
    can_run: bool = False
    in_flight: bool = False
    renaming: bool = False
    rename_error: str = ""
    deleting: bool = False
    # Per slot name (all of ALL_SLOTS are always present as keys):
    slot_info: dict[str, SlotView] = {}
    upload_pct: dict[str, int] = {}
    upload_error: dict[str, str] = {}
    uploading: dict[str, bool] = {}
    run_rows: list[RunRow] = []  # the newest RUNS_SHOWN
    runs_total: int = 0
    _watcher: str = ""

    @rx.var
    def tab_title(self) -> str:
        """The browser tab says which task it is: the page's <title> (`add_page(title=...)`), so
        it changes with the name in the same delta, no script of its own."""
        return format.tab_title("Task not found" if self.task_missing else self.task_name or "Task")

    def _path_task_id(self) -> str:
        parts = [p for p in (self.page_url().path or "").split("/") if p]
        return parts[1] if len(parts) >= 2 and parts[0] == "tasks" else ""

    def _reset_slots(self) -> None:
        self.slot_info = slot_views(None, {})
        self.upload_pct = dict.fromkeys(ALL_SLOTS, 0)
        self.upload_error = dict.fromkeys(ALL_SLOTS, "")
        self.uploading = dict.fromkeys(ALL_SLOTS, False)

    async def _refresh(self, user_id: str) -> None:
        """Reload the task, its inputs and its newest runs (owner only): one thread hop."""
        self._show(await run_db(tasks.task_view, user_id, self.task_id, RUNS_SHOWN))

    def _show(self, view: tasks.TaskView) -> None:
        task, inputs = view.task, view.inputs
        spec = catalog.get(task.model)
        self.task_name, self.task_model = task.name, spec.title if spec else task.model
        self.slot_info = slot_views(spec, inputs)
        price = tasks.price_of(task, inputs)
        self.price_label = f"{price:,} tokens" if price is not None else ""
        self.price_note = tasks.price_note(task, inputs)
        self.in_flight = view.in_flight
        self.runs_total = view.runs_total
        self.can_run = price is not None and not self.in_flight
        self.run_rows = [run_row(r) for r in view.runs]

    @rx.event
    async def on_load(self):
        """The session check and the task's read in one database call (one thread hop)."""
        task_id = self._path_task_id()
        if self.task_id:  # a page (re)load, or another task, shows the name, not a form
            self.renaming, self.rename_error = False, ""
        # (A state just made keeps its form: a new tab has none, and when Redis lost the tab's
        # state, Reflex runs the click that found it gone — "Rename" — before this on_load.)
        if task_id != self.task_id:  # another task: nothing of the last one stays on the page
            self.task_id, self.task_name = task_id, ""
            self.task_missing, self.task_error, self.run_error = False, "", ""
            self.run_needs_topup = False
            self._reset_slots()
            self.run_rows = []
        was_signed_in = self.authenticated
        user, view = await self.current_user_and(tasks.task_view_or_none, self.task_id, RUNS_SHOWN)
        if user is None:
            return self._login_redirect(ended=was_signed_in)
        if view is None:
            self.task_missing = True
            return None
        self._show(view)
        return TaskState.watch if self.in_flight else None

    async def _on_change(self):
        """Another tab ran it, or the worker moved a run on: show it, and follow a run in
        flight (`watch`)."""
        if not self.task_id:
            return None
        try:
            await self._refresh(self._user_id)
        except tasks.NotFound:
            self.task_missing = True
            return None
        return TaskState.watch if self.in_flight and not self._watcher else None

    @rx.event(background=True)
    @signed_in
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
                            await self.refresh_user()  # a failed run's refund shows in the header
                            return
                if to_login is not None:
                    yield to_login
                    return
        finally:
            async with self:
                if self._watcher == me:
                    self._watcher = ""

    @rx.event
    @signed_in
    async def run(self):
        self.run_error, self.run_needs_topup = "", False
        self.task_id = self._path_task_id()  # the page's own: also right after a server restart
        try:
            await run_db(runs.start_run, self._user_id, self.task_id)
        except runs.InsufficientTokens as exc:
            self.run_error, self.run_needs_topup = exc.message, True
            await self.refresh_user()
            return
        except tasks.TaskError as exc:
            self.run_error = exc.message
            if exc.code == "busy":  # started elsewhere (another tab): show that run, follow it
                await self._refresh(self._user_id)
                return TaskState.watch if self.in_flight else None
            return
        await self._refresh(self._user_id)
        await self.refresh_user()  # the debit shows in the header
        return TaskState.watch

    @rx.event
    def start_rename(self):
        self.renaming, self.rename_error = True, ""

    @rx.event
    def stop_rename(self):
        self.renaming, self.rename_error = False, ""

    @rx.event
    @signed_in
    async def rename(self, form: dict):
        try:
            task = await run_db(
                tasks.rename_task, self._user_id, self._path_task_id(), form.get("name", "")
            )
        except tasks.NotFound:
            self.task_missing = True
            return
        except tasks.TaskError as exc:
            self.rename_error = exc.message
            return
        self.task_name, self.renaming, self.rename_error = task.name, False, ""

    @rx.event
    @signed_in
    async def delete(self):
        """Delete this task (behind the page's confirmation): its files leave storage."""
        self.task_error, self.deleting = "", True
        yield
        try:
            await asyncio.to_thread(uploads.delete_task, self._user_id, self._path_task_id())
        except tasks.NotFound:
            self.task_missing, self.deleting = True, False
            return
        except tasks.TaskError as exc:
            self.task_error, self.deleting = exc.message, False
            return
        self.deleting = False
        yield rx.toast.success(f"“{self.task_name}” was deleted.")
        yield rx.redirect(routes.HOME)

    @rx.event
    @signed_in
    async def cancel(self, run_id: str):
        """Cancel a run still waiting for the generation service: its tokens come back."""
        self.run_error = ""
        if not await run_db(runs.cancel_run, self._user_id, run_id):
            self.run_error = "This run has already started: it can no longer be canceled."
        try:
            await self._refresh(self._user_id)
        except tasks.NotFound:
            self.task_missing = True
            return
        await self.refresh_user()  # the refund shows in the header

    @rx.event
    def upload_progress(self, progress: dict, slot: str):
        if slot in self.upload_pct:
            self.upload_pct[slot] = int(float(progress.get("progress", 0)) * 100)

    @rx.event(background=True)
    @signed_in
    async def upload_slot(self, chunks: rx.UploadChunkIterator, slot: str):
        """Stream one file into a slot (`uploads.spool_and_ingest`: never whole in memory, the
        size limit enforced while it streams)."""
        async with self:
            user_id, task_id = self._user_id, self._path_task_id()
            if slot in self.upload_error:
                self.upload_error[slot] = ""
                self.uploading[slot] = True
        if slot not in ALL_SLOTS:
            return
        yield _LEAVE_GUARD
        error = ""
        try:
            _task, spec_slot = await run_db(tasks.upload_target, user_id, task_id, slot)
            error = await uploads.spool_and_ingest(chunks, user_id, task_id, spec_slot)
            if error == uploads.NO_FILE:
                error = ""  # a drop the browser refused: its toast already said why
        except tasks.TaskError as exc:
            error = exc.message
        except asyncio.CancelledError:  # "Cancel upload", or the tab went: nothing is kept
            async with self:
                self.uploading[slot], self.upload_pct[slot] = False, 0
            raise
        async with self:
            self.uploading[slot] = False
            self.upload_pct[slot] = 0 if error else 100
            self.upload_error[slot] = error
            try:
                await self._refresh(user_id)
            except tasks.NotFound:
                self.task_missing = True
