"""My tasks (issue L): filters by the newest run's status and by model, search by name, paging,
the thumbnail's run, deleted tasks hidden — on SQLite and PostgreSQL, in bounded queries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session

from tests.helpers import make_user, statements
from vgen_app import clock
from vgen_app.models import Run, RunStatus, Task
from vgen_app.services import tasks
from vgen_app.services.errors import TaskError
from vgen_app.ui.dashboard import DashboardState, task_row


def make_task(db: Session, owner: str, name: str, model: str = "lipsync") -> Task:
    task = tasks.create_task(db, owner, model, name)
    clock.travel(timedelta(seconds=1))  # newest first is a strict order
    return task


def add_run(
    db: Session, task: Task, status: RunStatus, poster: bool = False, attempt: int | None = None
) -> Run:
    done = len(db.exec(Run.__table__.select().where(Run.task_id == task.id)).all())
    run = Run(
        task_id=task.id,
        owner_id=task.owner_id,
        attempt=attempt or done + 1,
        status=status,
        price=100,
        model=task.model,
        inputs={},
        poster_key=f"results/{task.id}/{done + 1}.jpg" if poster else None,
    )
    db.add(run)
    db.commit()
    db.refresh(run)
    return run


def names(page: tasks.TaskPage) -> list[str]:
    return [r.task.name for r in page.rows]


@pytest.fixture
def ann_tasks(db: Session) -> str:
    """Ann's tasks, oldest first, one per kind of newest run; Bob has one too."""
    ann = make_user(db, "ann@example.com")
    bob = make_user(db, "bob@example.com")
    make_task(db, ann, "never run")
    add_run(db, make_task(db, ann, "waiting"), RunStatus.QUEUED)
    busy = make_task(db, ann, "busy", "faceswap")
    add_run(db, busy, RunStatus.FAILED)
    add_run(db, busy, RunStatus.PROCESSING)
    done = make_task(db, ann, "done", "faceswap")
    add_run(db, done, RunStatus.FAILED)
    add_run(db, done, RunStatus.SUCCEEDED)
    broke = make_task(db, ann, "broke")
    add_run(db, broke, RunStatus.SUCCEEDED, poster=True)
    add_run(db, broke, RunStatus.FAILED)  # the newest run decides
    add_run(db, make_task(db, ann, "called off", "talking-photo"), RunStatus.CANCELED)
    add_run(db, make_task(db, bob, "bob's", "faceswap"), RunStatus.FAILED)
    return ann


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("", ["called off", "broke", "done", "busy", "waiting", "never run"]),
        ("not_run", ["never run"]),
        ("in_flight", ["busy", "waiting"]),
        ("queued", ["waiting"]),
        ("processing", ["busy"]),
        ("succeeded", ["done"]),
        ("failed", ["broke"]),
        ("canceled", ["called off"]),
    ],
)
def test_status_is_the_newest_runs(db: Session, ann_tasks: str, status: str, expected) -> None:
    page = tasks.list_tasks(db, ann_tasks, status=status)
    assert names(page) == expected
    assert page.total == len(expected) and page.has_tasks


def test_model_filter_and_both_together(db: Session, ann_tasks: str) -> None:
    assert names(tasks.list_tasks(db, ann_tasks, model="faceswap")) == ["done", "busy"]
    assert names(tasks.list_tasks(db, ann_tasks, model="faceswap", status="failed")) == []
    assert names(tasks.list_tasks(db, ann_tasks, model="lipsync", status="failed")) == ["broke"]
    page = tasks.list_tasks(db, ann_tasks, model="no-such-model")
    assert (page.rows, page.total, page.has_tasks) == ([], 0, True)


def test_an_unknown_status_is_refused(db: Session, ann_tasks: str) -> None:
    with pytest.raises(TaskError) as refused:
        tasks.list_tasks(db, ann_tasks, status="deleted")
    assert refused.value.code == "unknown_filter"


def test_search_is_a_substring_of_the_name_whatever_the_case(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    for name in [
        "Spanish PROMO",
        "promo, German",
        "100% real",
        "100 real",
        "snake_case",
        "snakeXcase",
        "back\\slash",
        "backslash",
    ]:
        make_task(db, ann, name)

    def found(search: str) -> list[str]:
        return sorted(names(tasks.list_tasks(db, ann, search=search)))

    assert found("promo") == ["Spanish PROMO", "promo, German"]
    assert found("  Promo  ") == ["Spanish PROMO", "promo, German"]  # trimmed
    assert found("%") == ["100% real"]  # a wildcard in the search matches itself
    assert found("0% r") == ["100% real"]
    assert found("_") == ["snake_case"]
    assert found("KE_C") == ["snake_case"]
    assert found("\\") == ["back\\slash"]
    assert found("k\\s") == ["back\\slash"]
    assert found("nothing like it") == []
    assert found("promo\x00") == ["Spanish PROMO", "promo, German"]  # PostgreSQL refuses NUL
    assert len(found("")) == 8
    page = tasks.list_tasks(db, ann, search="promo", status="not_run")
    assert page.total == 2 and page.has_tasks


def test_paging_counts_only_what_matches(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    for i in range(7):
        make_task(db, ann, f"promo {i}" if i % 2 == 0 else f"other {i}")
    first = tasks.list_tasks(db, ann, 1, 2, search="promo")
    assert (first.total, first.pages, names(first)) == (4, 2, ["promo 6", "promo 4"])
    second = tasks.list_tasks(db, ann, 2, 2, search="promo")
    assert names(second) == ["promo 2", "promo 0"]
    past = tasks.list_tasks(db, ann, 9, 2, search="promo")
    assert past.page == 2 and names(past) == ["promo 2", "promo 0"]  # clamped to the last page
    assert tasks.list_tasks(db, ann, 0, 2).page == 1


def test_the_thumbnail_is_the_newest_succeeded_run_with_a_poster(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    older = make_task(db, ann, "older result")
    shown = add_run(db, older, RunStatus.SUCCEEDED, poster=True)
    add_run(db, older, RunStatus.SUCCEEDED)  # no poster (yet): not shown
    add_run(db, older, RunStatus.FAILED)
    newest = make_task(db, ann, "newest result")
    add_run(db, newest, RunStatus.SUCCEEDED, poster=True)
    latest = add_run(db, newest, RunStatus.SUCCEEDED, poster=True)
    odd = make_task(db, ann, "failed with a frame")
    add_run(db, odd, RunStatus.FAILED, poster=True)  # only a succeeded run's frame is a result
    make_task(db, ann, "never run")

    by_name = {r.task.name: r for r in tasks.list_tasks(db, ann).rows}
    assert by_name["older result"].poster_run_id == shown.id
    assert (
        by_name["older result"].last_status == RunStatus.FAILED
        and by_name["older result"].runs == 3
    )
    assert by_name["newest result"].poster_run_id == latest.id
    assert by_name["failed with a frame"].poster_run_id is None
    assert by_name["never run"].poster_run_id is None


def test_deleted_tasks_are_hidden_from_every_filter(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    kept = make_task(db, ann, "kept promo")
    gone = make_task(db, ann, "gone promo")
    add_run(db, kept, RunStatus.SUCCEEDED)
    add_run(db, gone, RunStatus.SUCCEEDED, poster=True)
    gone.deleted_at = clock.now()
    db.add(gone)
    db.commit()
    for filters in [{}, {"status": "succeeded"}, {"search": "promo"}, {"model": "lipsync"}]:
        page = tasks.list_tasks(db, ann, **filters)
        assert names(page) == ["kept promo"] and page.total == 1, filters

    kept.deleted_at = clock.now()
    db.add(kept)
    db.commit()
    for filters in [{}, {"search": "promo"}]:
        page = tasks.list_tasks(db, ann, **filters)
        assert (page.total, page.has_tasks) == (0, False), filters  # no tasks left at all


def test_no_tasks_at_all_and_no_match_are_told_apart(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    empty = tasks.list_tasks(db, ann, status="failed", search="x")
    assert (empty.total, empty.has_tasks, empty.pages, empty.page) == (0, False, 1, 1)
    make_task(db, ann, "clip")
    none_match = tasks.list_tasks(db, ann, status="failed")
    assert (none_match.total, none_match.has_tasks) == (0, True)
    assert tasks.list_tasks(db, ann).has_tasks


def test_filtered_lists_stay_bounded_queries(db: Session, ann_tasks: str) -> None:
    done = next(r.task for r in tasks.list_tasks(db, ann_tasks).rows if r.task.name == "done")
    with statements() as few:
        tasks.list_tasks(db, ann_tasks, status="succeeded", model="faceswap", search="o")
    for _ in range(30):
        add_run(db, done, RunStatus.SUCCEEDED, poster=True)
    with statements() as many:
        page = tasks.list_tasks(db, ann_tasks, status="succeeded", model="faceswap", search="o")
    assert len(many) == len(few) == 1  # the page with its runs and the count: not one per task
    assert page.rows[0].runs == 32 and page.rows[0].poster_run_id
    assert page.total == 1
    with statements() as nothing:
        tasks.list_tasks(db, ann_tasks, status="failed", model="faceswap")
    assert len(nothing) == 2  # the (empty) page, then whether there are tasks at all


def test_a_page_past_the_last_one_shows_the_last_one(db: Session, ann_tasks: str) -> None:
    everything = tasks.list_tasks(db, ann_tasks, per_page=2)
    assert everything.pages >= 2 and everything.total > 2
    with statements() as seen:
        page = tasks.list_tasks(db, ann_tasks, page=99, per_page=2)
    assert len(seen) == 3  # the empty page, the count, the last page
    assert (page.page, page.pages, page.total) == (everything.pages,) * 2 + (everything.total,)
    assert len(page.rows) == everything.total - 2 * (everything.pages - 1)
    last = tasks.list_tasks(db, ann_tasks, page=everything.pages, per_page=2)
    assert [r.task.id for r in page.rows] == [r.task.id for r in last.rows]


# --- the page: its query in the URL, remembered while the tab is elsewhere -------------------------


def _at(root: Any, path: str, pattern: str, cookie: str) -> None:
    from reflex.istate.data import RouterData

    from tests.helpers import ORIGIN

    router = RouterData.from_router_data(
        {
            "headers": {"origin": ORIGIN, "cookie": cookie},
            "asPath": path,
            "pathname": pattern,
            "ip": "127.0.0.1",
            "token": "client-token",
        }
    )
    root.router = router  # as an event brings it: to the whole tree
    _dashboard(root).router = router


def _dashboard(root: Any) -> Any:
    def walk(state: Any) -> Iterator[Any]:
        for sub in state.substates.values():
            yield sub
            yield from walk(sub)

    return next(s for s in walk(root) if isinstance(s, DashboardState))


def _js(event: Any) -> str:
    return "" if event is None else str(event)


def test_the_list_is_in_the_url_and_kept_while_the_tab_is_elsewhere(db: Session) -> None:
    from tests.helpers import login_session
    from vgen_app.ui import routes
    from vgen_app.ui.session import SessionState

    ann = make_user(db, "ann@example.com")
    for i in range(23):
        make_task(db, ann, f"Promo {i}" if i < 22 else "other")
    failed = make_task(db, ann, "failed promo")
    add_run(db, failed, RunStatus.FAILED)
    cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
    root = SessionState()
    dash = _dashboard(root)

    _at(root, "/?page=2&q=promo", "/index", cookie)
    asyncio.run(root.enter_page())
    assert _js(asyncio.run(dash.on_load())) == ""  # the URL already says it
    assert (dash.tasks_page, dash.tasks_pages, dash.tasks_total) == (2, 2, 23)
    assert dash.search_text == "promo" and dash.status_filter == "all"

    events = asyncio.run(dash.filter_status("failed"))
    assert "replaceState" in _js(events) and '"/?status=failed&q=promo"' in _js(events)
    assert [r.name for r in dash.task_rows] == ["failed promo"] and dash.tasks_page == 1
    events = asyncio.run(dash.filter_model("lipsync"))
    assert '"/?status=failed&model=lipsync&q=promo"' in _js(events)

    # Into a task: the page forgets what it showed, not the query.
    _at(root, f"/tasks/{failed.id}", routes.TASK, cookie)
    asyncio.run(root.enter_page())
    assert dash.task_rows == [] and dash.status_filter == "all"

    # Back through "← My tasks" (no query): the list as it was, and the URL says so.
    _at(root, "/", "/index", cookie)
    asyncio.run(root.enter_page())
    events = asyncio.run(dash.on_load())
    assert '"/?status=failed&model=lipsync&q=promo"' in _js(events)
    assert (dash.status_filter, dash.model_filter, dash.search_text) == (
        "failed",
        "lipsync",
        "promo",
    )
    assert [r.name for r in dash.task_rows] == ["failed promo"]

    # A query in the URL wins over the remembered one; junk is the default.
    _at(root, "/?status=bogus&model=deepfake&page=x&q=other", "/index", cookie)
    events = asyncio.run(dash.on_load())
    assert (dash.status_filter, dash.model_filter, dash.tasks_page) == ("all", "all", 1)
    assert [r.name for r in dash.task_rows] == ["other"] and '"/?q=other"' in _js(events)

    _at(root, "/?q=nothing-like-it", "/index", cookie)
    asyncio.run(dash.on_load())
    assert (dash.tasks_total, dash.has_tasks, dash.filtered) == (0, True, True)  # no match
    events = asyncio.run(dash.clear_filters())
    assert '"/"' in _js(events) and dash.tasks_total == 24 and not dash.filtered
    _at(root, "/", "/index", cookie)
    assert _js(asyncio.run(dash.on_load())) == "" and dash.search_text == ""


def test_someone_else_in_the_same_tab_starts_with_the_whole_list(db: Session) -> None:
    from tests.helpers import login_session
    from vgen_app.ui.session import SessionState

    ann = make_user(db, "ann@example.com")
    bob = make_user(db, "bob@example.com")
    make_task(db, ann, "ann's secret plan")
    make_task(db, bob, "bob's clip")
    root = SessionState()
    dash = _dashboard(root)
    ann_cookie = f"vgen_session={login_session(db, 'ann@example.com')}"
    _at(root, "/?q=secret", "/index", ann_cookie)
    asyncio.run(dash.on_load())
    assert dash.tasks_total == 1

    # Ann logs out, Bob logs in in this tab (its state lives on): not Ann's search.
    _at(root, "/", "/index", f"vgen_session={login_session(db, 'bob@example.com')}")
    assert _js(asyncio.run(dash.on_load())) == ""
    assert dash.search_text == "" and [r.name for r in dash.task_rows] == ["bob's clip"]


def test_the_rows_show_the_thumbnail_or_none(db: Session) -> None:
    ann = make_user(db, "ann@example.com")
    shown = make_task(db, ann, "Spanish promo")
    run = add_run(db, shown, RunStatus.SUCCEEDED, poster=True)
    make_task(db, ann, "not yet")
    rows = {r.task.name: task_row(r) for r in tasks.list_tasks(db, ann).rows}
    assert rows["Spanish promo"].poster.endswith(f"/api/media/poster/{run.id}")
    assert rows["Spanish promo"].poster_alt == "Spanish promo — latest result"
    assert rows["not yet"].poster == ""
