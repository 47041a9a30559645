"""The task page: materials (one upload zone per slot), the price and Run, the runs."""

from __future__ import annotations

import reflex as rx

from vgen_app import catalog
from vgen_app.ui import format, routes
from vgen_app.ui.layout import app_shell, error_callout, link_button, notice_card, spread
from vgen_app.ui.session import SessionState
from vgen_app.ui.task import RUNS_SHOWN, TaskState
from vgen_app.ui.task_actions import cancel_button, input_preview, result_player, task_heading

_ICONS = {"video": "video", "audio": "audio-lines", "image": "image"}

# The MIME type of each file extension the catalog names (the file picker offers these);
# an extension missing here is still offered by its extension.
_MIME = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "mkv": "video/x-matroska",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "ogg": "audio/ogg",
    "opus": "audio/opus",
    "flac": "audio/flac",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
}


def slot_positions() -> list[list[str]]:
    """For each position on the page, the slot names some model shows there (models.toml's
    order). The page renders position by position, so the DOM order (and the Tab order) is the
    order shown, whatever the task's model."""
    models = catalog.models()
    width = max((len(m.slots) for m in models), default=0)
    return [sorted({m.slots[i].name for m in models if len(m.slots) > i}) for i in range(width)]


def slot_accept(name: str) -> dict[str, list[str]]:
    """The file picker's filter for a slot name: every format any model takes in it, by MIME
    type (react-dropzone's `accept`). The server checks the task's own slot again."""
    accept: dict[str, list[str]] = {}
    for model in catalog.models():
        slot = model.get_slot(name)
        for ext in slot.formats if slot else []:
            mime = _MIME.get(ext) or f"{slot.kind}/{ext}"
            if ext == "webm":
                mime = f"{slot.kind}/webm"
            accept.setdefault(mime, [])
            if f".{ext}" not in accept[mime]:
                accept[mime].append(f".{ext}")
    return accept


def slot_max_bytes(name: str) -> int:
    """The largest file any model takes in this slot (the task's own limit is checked again)."""
    return max(s.max_bytes for m in catalog.models() if (s := m.get_slot(name)))


def _drop_zone(name: str) -> rx.Component:
    """Drop a file on the zone, or press its button (Enter or Space, or a click anywhere in the
    zone) for the file picker. The button is the zone's one Tab stop and carries its name."""
    info = TaskState.slot_info[name]
    upload_id = f"upload-{name}"
    disabled = TaskState.in_flight | TaskState.uploading[name]
    has_file = info.filename != ""
    zone = rx.upload.root(
        rx.vstack(
            rx.text(
                rx.cond(has_file, "Drop a new file here to replace it, or", "Drop a file here, or"),
                size="2",
                color_scheme="gray",
                high_contrast=True,
            ),
            rx.button(
                rx.icon("upload", size=16),
                rx.cond(has_file, "Replace", "Upload"),
                variant="soft",
                size="2",
                disabled=disabled,
                aria_label=rx.cond(has_file, "Replace the ", "Upload the ") + info.label.lower(),
                aria_describedby=f"slot-{name}-limits",
                id=f"{upload_id}-button",
            ),
            align="center",
            spacing="2",
        ),
        id=upload_id,
        max_files=1,
        multiple=False,
        accept=slot_accept(name),
        # Too big is refused in the browser, before a byte is sent (the server checks again).
        max_size=slot_max_bytes(name),
        disabled=disabled,
        # The zone itself is no Tab stop: its button is (a focusable zone would be a second
        # control around the button and the picker's hidden input).
        no_keyboard=True,
        on_drop=TaskState.upload_slot(
            rx.upload_files_chunk(
                upload_id=upload_id,
                on_upload_progress=lambda p: TaskState.upload_progress(p, name),
            ),
            name,
        ),
        on_drop_rejected=lambda _files: rx.toast.error(
            info.label + ": choose one file (" + info.limits + ")."
        ),
        border="1px dashed var(--gray-8)",
        border_radius="8px",
        padding="16px",
        width="100%",
        cursor="pointer",
        _hover={"background": "var(--gray-a2)"},
    )
    # react-dropzone's hidden <input type=file> (it only receives the picked file): out of the
    # accessibility tree, the visible button stands for it.
    file_input = zone.children[0].children[0]
    file_input.special_props.append(rx.Var.create({"aria-hidden": "true"}))
    return zone


def _slot_card(name: str, position: int) -> rx.Component:
    info = TaskState.slot_info[name]
    return rx.cond(
        info.shown & (info.order == position),
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.icon(_ICONS.get(name, "file"), size=18, aria_hidden="true"),
                    rx.heading(info.label, size="3", as_="h3"),
                    align="center",
                ),
                rx.text(info.limits, size="1", color_scheme="gray", id=f"slot-{name}-limits"),
                rx.cond(
                    info.filename != "",
                    rx.callout(
                        rx.text(
                            rx.text.strong(info.filename),
                            " — ",
                            info.details,
                            overflow_wrap="anywhere",
                        ),
                        icon="circle_check",
                        color_scheme="green",
                        size="1",
                        width="100%",
                        role="status",
                        id=f"slot-{name}-file",
                    ),
                ),
                input_preview(name),
                _drop_zone(name),
                rx.cond(
                    TaskState.uploading[name],
                    rx.vstack(
                        rx.progress(
                            value=TaskState.upload_pct[name],
                            max=100,
                            width="100%",
                            aria_label="Upload progress",
                        ),
                        rx.hstack(
                            rx.text("Uploading… ", TaskState.upload_pct[name], "%", size="1"),
                            rx.button(
                                "Cancel upload",
                                size="1",
                                variant="soft",
                                color_scheme="gray",
                                on_click=rx.cancel_upload(f"upload-{name}"),
                                id=f"slot-{name}-cancel",
                            ),
                            align="center",
                            spacing="3",
                        ),
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
                        role="alert",
                        id=f"slot-{name}-error",
                    ),
                ),
                spacing="2",
                width="100%",
            ),
            flex="1 1 260px",
            min_width="0",
        ),
    )


def _materials() -> rx.Component:
    return rx.flex(
        *[
            _slot_card(name, position)
            for position, names in enumerate(slot_positions())
            for name in names
        ],
        spacing="3",
        wrap="wrap",
        width="100%",
        id="materials",
    )


def _run_row(row: rx.Var) -> rx.Component:
    return rx.card(
        rx.vstack(
            spread(
                rx.vstack(
                    rx.hstack(
                        rx.heading("Attempt ", row.attempt, size="3", as_="h3"),
                        format.status_badge(row.status),
                        rx.cond(row.refunded, rx.badge("refunded", color_scheme="amber")),
                        align="center",
                        spacing="2",
                        wrap="wrap",
                    ),
                    rx.text(
                        format.local_time(row.created_iso),
                        " · ",
                        row.price,
                        " tokens",
                        size="1",
                        color_scheme="gray",
                        high_contrast=True,
                    ),
                    rx.cond(
                        row.active,
                        rx.hstack(
                            rx.progress(
                                value=row.progress,
                                max=100,
                                width="200px",
                                max_width="60vw",
                                aria_label="Run progress",
                            ),
                            rx.text(row.progress, "%", size="1"),
                            align="center",
                        ),
                    ),
                    rx.cond(row.error != "", rx.text(row.error, size="2", color_scheme="red")),
                    spacing="1",
                    align="start",
                    min_width="0",
                ),
                rx.hstack(
                    cancel_button(row),
                    rx.cond(
                        row.download != "",
                        # A full document load (the app's router would treat a link as a page):
                        # the route answers with an attachment, so the page stays where it is.
                        rx.button(
                            rx.icon("download", size=14),
                            "Download",
                            variant="soft",
                            on_click=format.full_redirect(row.download),
                            data_href=row.download,
                            aria_label="Download attempt " + row.attempt.to(str),
                            id="download-" + row.attempt.to(str),
                        ),
                    ),
                    spacing="2",
                ),
            ),
            result_player(row),
            spacing="3",
            width="100%",
        ),
        width="100%",
        id="run-" + row.attempt.to(str),
        data_status=row.status,
    )


def _price_card() -> rx.Component:
    return rx.card(
        spread(
            rx.vstack(
                rx.text("Price of a run", size="2", color_scheme="gray", high_contrast=True),
                rx.text(
                    rx.cond(
                        TaskState.price_label != "",
                        TaskState.price_label,
                        "upload every input to see it",
                    ),
                    weight="bold",
                    id="run-price",
                ),
                rx.cond(
                    TaskState.price_note != "",
                    rx.text(TaskState.price_note, size="1", color_scheme="gray", id="price-note"),
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
            rx.button(
                rx.cond(TaskState.run_rows.length() > 0, "Regenerate", "Run"),
                rx.icon("play", size=16),
                size="3",
                disabled=~TaskState.can_run,
                on_click=TaskState.run,
                id="run-button",
            ),
        ),
        width="100%",
    )


def task_page() -> rx.Component:
    return app_shell(
        rx.cond(
            TaskState.task_missing,
            notice_card(
                rx.heading("Task not found", size="5", as_="h1"),
                rx.text("It does not exist, or it is not yours.", color_scheme="gray"),
                link_button("My tasks", href=routes.HOME),
                id="task-missing",
            ),
            rx.vstack(
                rx.link("← My tasks", href=routes.HOME, size="2"),
                task_heading(),
                rx.heading("Materials", size="4", as_="h2"),
                _materials(),
                _price_card(),
                error_callout(
                    TaskState.run_error,
                    rx.cond(
                        TaskState.run_needs_topup,
                        # Back to this task once the payment has gone through.
                        rx.link(
                            "Buy tokens",
                            href=routes.TOKENS + "?back=/tasks/" + TaskState.task_id,
                            weight="bold",
                        ),
                    ),
                    id="run-error",
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
