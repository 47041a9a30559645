"""A new task: pick a model, name it, create it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import reflex as rx

from vgen_app import catalog
from vgen_app.db import run_db
from vgen_app.services import tasks
from vgen_app.ui import routes
from vgen_app.ui.layout import app_shell, error_callout, label
from vgen_app.ui.session import SessionState, signed_in


@dataclass
class ModelCard:
    id: str
    title: str
    description: str
    inputs: str
    price: str


def model_card(m: catalog.ModelSpec) -> ModelCard:
    return ModelCard(
        id=m.id,
        title=m.title,
        description=m.description,
        inputs=" + ".join(s.label for s in m.slots),
        price=f"{m.price_per_second:,} tokens per second of video, at least {m.min_price:,}",
    )


class NewTaskState(SessionState):
    PAGE: ClassVar[str] = routes.TASKS_NEW
    new_task_error: str = ""

    @rx.var
    def model_cards(self) -> list[ModelCard]:
        return [model_card(m) for m in catalog.models()]

    @rx.event
    @signed_in
    async def create(self, form: dict):
        self.new_task_error = ""
        try:
            task = await run_db(
                tasks.create_task, self._user_id, form.get("model", ""), form.get("name", "")
            )
        except tasks.TaskError as exc:
            self.new_task_error = exc.message
            return
        return rx.redirect(f"/tasks/{task.id}")


def _model_choice(m: rx.Var) -> rx.Component:
    return rx.radio_cards.item(
        rx.vstack(
            rx.text(m.title, weight="bold"),
            rx.text(m.description, size="2", color_scheme="gray"),
            rx.text("Inputs: ", m.inputs, size="1"),
            rx.text(m.price, size="1", color_scheme="gray"),
            spacing="1",
            align="start",
        ),
        value=m.id,
        align_items="start",
        id="model-" + m.id.to(str),
    )


def new_task_page() -> rx.Component:
    return app_shell(
        rx.vstack(
            rx.heading("New task", size="7", as_="h1"),
            error_callout(NewTaskState.new_task_error),
            rx.form(
                rx.vstack(
                    rx.text("Choose a model", size="3", weight="medium", id="model-label"),
                    rx.radio_cards.root(
                        rx.foreach(NewTaskState.model_cards, _model_choice),
                        name="model",
                        default_value="lipsync",
                        columns={"initial": "1", "sm": "3"},
                        aria_labelledby="model-label",
                        width="100%",
                    ),
                    label("Name (optional)", "name"),
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
