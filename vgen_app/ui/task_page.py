"""The task page: materials (one upload zone per slot), the price and Run, the runs."""

from __future__ import annotations

import reflex as rx

from vgen_app.ui import format, routes
from vgen_app.ui.layout import app_shell, error_callout, notice_card
from vgen_app.ui.session import SessionState
from vgen_app.ui.task import ALL_SLOTS, RUNS_SHOWN, TaskState


def _slot_card(name: str) -> rx.Component:
    info = TaskState.slot_info[name]
    upload_id = f"upload-{name}"
    return rx.cond(
        info.shown,
        rx.card(
            rx.vstack(
                rx.hstack(
                    rx.icon(
                        {"video": "video", "audio": "audio-lines", "image": "image"}.get(
                            name, "file"
                        ),
                        size=18,
                    ),
                    rx.text(info.label, weight="bold"),
                    align="center",
                ),
                rx.text(info.limits, size="1", color_scheme="gray"),
                rx.cond(
                    info.filename != "",
                    rx.callout(
                        rx.text(rx.text.strong(info.filename), " — ", info.details),
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
                                info.filename != "",
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
            order=info.order,  # the model's slot order, not the alphabetical one
        ),
    )


def _run_row(row: rx.Var) -> rx.Component:
    return rx.card(
        rx.hstack(
            rx.vstack(
                rx.hstack(
                    rx.text("Attempt ", row.attempt, weight="bold"),
                    format.status_badge(row.status),
                    rx.cond(row.refunded, rx.badge("refunded", color_scheme="amber")),
                    align="center",
                    spacing="2",
                ),
                rx.text(row.created, " · ", row.price, " tokens", size="1", color_scheme="gray"),
                rx.cond(
                    row.active,
                    rx.hstack(
                        rx.progress(value=row.progress, width="200px"),
                        rx.text(row.progress, "%", size="1"),
                        align="center",
                    ),
                ),
                rx.cond(row.error != "", rx.text(row.error, size="2", color_scheme="red")),
                spacing="1",
                align="start",
            ),
            rx.spacer(),
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
                    id="download-" + row.attempt.to(str),
                ),
            ),
            align="center",
            width="100%",
        ),
        width="100%",
        id="run-" + row.attempt.to(str),
        data_status=row.status,
    )


def task_page() -> rx.Component:
    return app_shell(
        rx.cond(
            TaskState.task_missing,
            notice_card(
                rx.heading("Task not found", size="5", as_="h1"),
                rx.text("It does not exist, or it is not yours.", color_scheme="gray"),
                rx.link(rx.button("My tasks"), href=routes.HOME),
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
                error_callout(
                    TaskState.run_error,
                    rx.cond(
                        TaskState.run_needs_topup,
                        rx.link("Buy tokens", href=routes.TOKENS, weight="bold"),
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
