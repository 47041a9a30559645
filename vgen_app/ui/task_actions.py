"""The task page's own controls: its name (renamed in place), deleting it behind a confirmation,
previews of the inputs, the result's player, and cancelling a run that has not started."""

from __future__ import annotations

import reflex as rx

from vgen_app.services import tasks
from vgen_app.ui.layout import error_callout
from vgen_app.ui.task import TaskState


def _rename_form() -> rx.Component:
    return rx.form(
        rx.hstack(
            rx.input(
                name="name",
                default_value=TaskState.task_name,
                max_length=120,
                required=True,
                auto_focus=True,
                aria_label="Task name",
                size="3",
                width="min(420px, 100%)",
                id="rename-input",
            ),
            rx.button("Save", type="submit", size="3", id="rename-save"),
            rx.button(
                "Cancel",
                type="button",
                variant="soft",
                color_scheme="gray",
                size="3",
                on_click=TaskState.stop_rename,
            ),
            spacing="2",
            wrap="wrap",
            width="100%",
        ),
        on_submit=TaskState.rename,
        reset_on_submit=False,
        width="100%",
    )


def _delete_dialog() -> rx.Component:
    """Delete behind a confirmation; while a run is in flight the dialog says why it cannot."""
    return rx.alert_dialog.root(
        rx.alert_dialog.trigger(
            rx.button(
                rx.icon("trash_2", size=14),
                "Delete",
                variant="soft",
                color_scheme="red",
                high_contrast=True,
                disabled=TaskState.deleting,
                id="delete-task",
            )
        ),
        rx.alert_dialog.content(
            rx.alert_dialog.title("Delete “", TaskState.task_name, "”?"),
            rx.cond(
                TaskState.in_flight,
                rx.alert_dialog.description(tasks.BUSY_DELETE, id="delete-busy"),
                rx.alert_dialog.description(
                    "Its uploaded files and every result are removed for good. "
                    "Your token history keeps its entries.",
                ),
            ),
            rx.hstack(
                rx.alert_dialog.cancel(
                    rx.button(
                        rx.cond(TaskState.in_flight, "Close", "Keep it"),
                        variant="soft",
                        color_scheme="gray",
                    )
                ),
                rx.cond(
                    TaskState.in_flight,
                    rx.fragment(),
                    rx.alert_dialog.action(
                        rx.button(
                            "Delete the task",
                            color_scheme="red",
                            on_click=TaskState.delete,
                            id="delete-confirm",
                        )
                    ),
                ),
                spacing="3",
                justify="end",
                margin_top="16px",
            ),
            max_width="440px",
        ),
    )


def task_heading() -> rx.Component:
    """The name with Rename and Delete, or the rename field (Enter saves; Cancel keeps it)."""
    return rx.vstack(
        rx.cond(
            TaskState.renaming,
            _rename_form(),
            rx.flex(
                rx.heading(
                    TaskState.task_name,
                    size="7",
                    as_="h1",
                    id="task-name",
                    overflow_wrap="anywhere",
                ),
                rx.badge(TaskState.task_model, size="2"),
                rx.button(
                    rx.icon("pencil", size=14),
                    "Rename",
                    variant="ghost",
                    on_click=TaskState.start_rename,
                    id="rename-task",
                ),
                _delete_dialog(),
                align="center",
                spacing="3",
                wrap="wrap",
            ),
        ),
        error_callout(TaskState.rename_error, id="rename-error"),
        error_callout(TaskState.task_error, id="task-error"),
        spacing="2",
        width="100%",
    )


def input_preview(name: str) -> rx.Component:
    """The stored input of a slot, to look at or listen to before running."""
    info = TaskState.slot_info[name]
    return rx.cond(
        info.media_url != "",
        rx.match(
            info.kind,
            (
                "video",
                rx.el.video(
                    src=info.media_url,
                    controls=True,
                    preload="metadata",
                    aria_label="Preview of " + info.filename,
                    style={"width": "100%", "maxHeight": "240px", "borderRadius": "6px"},
                    id=f"preview-{name}",
                ),
            ),
            (
                "audio",
                rx.el.audio(
                    src=info.media_url,
                    controls=True,
                    preload="metadata",
                    aria_label="Preview of " + info.filename,
                    style={"width": "100%"},
                    id=f"preview-{name}",
                ),
            ),
            rx.image(
                src=info.media_url,
                alt="Preview of " + info.filename,
                max_height="240px",
                border_radius="6px",
                id=f"preview-{name}",
            ),
        ),
    )


def result_player(row: rx.Var) -> rx.Component:
    """A succeeded run's video, playing in the page (seeking asks the media route for ranges)."""
    return rx.cond(
        row.play != "",
        rx.el.video(
            src=row.play,
            poster=row.poster,
            controls=True,
            preload="metadata",
            aria_label="Result of attempt " + row.attempt.to(str),
            style={"width": "100%", "maxHeight": "420px", "borderRadius": "6px",
                   "background": "var(--gray-3)"},
            id="player-" + row.attempt.to(str),
        ),
    )  # fmt: skip


def cancel_button(row: rx.Var) -> rx.Component:
    return rx.cond(
        row.cancelable,
        rx.button(
            "Cancel",
            variant="soft",
            color_scheme="gray",
            on_click=TaskState.cancel(row.id),
            aria_label="Cancel attempt " + row.attempt.to(str),
            id="cancel-" + row.attempt.to(str),
        ),
    )
