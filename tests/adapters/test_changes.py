"""The per-user change feed (issue K: open pages follow changes without polling): in-process and
through a real Redis, a wait ends at a change (or its timeout), a change made while nobody waits
is not lost, and only committed transactions are told."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
import redis

from vgen_app.adapters.changes import LocalFeed, RedisFeed

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def feeds() -> list:
    params = [pytest.param(LocalFeed, id="local")]
    params.append(
        pytest.param(
            lambda: RedisFeed(REDIS_URL),
            id="redis",
            marks=pytest.mark.skipif(not _redis_up(), reason="no Redis on 127.0.0.1:6379"),
        )
    )
    return params


@pytest.mark.parametrize("make", feeds())
def test_a_wait_ends_at_a_change_from_another_thread(make) -> None:
    feed = make()
    user = uuid.uuid4().hex

    async def scenario() -> tuple[int, float, int]:
        seen = feed.version(user)
        if isinstance(feed, RedisFeed):  # the listener subscribes first
            await feed.wait(user, seen, 0.3)
        # A service commits in a worker thread 0.2 s from now.
        threading.Timer(0.2, feed.publish, args=(user,)).start()
        t0 = time.perf_counter()
        version = await feed.wait(user, seen, 10)
        waited = time.perf_counter() - t0
        other = await feed.wait("someone-else", 0, 0.05)  # nobody told: times out at 0
        return version, waited, other

    version, waited, other = asyncio.run(scenario())
    assert version == 1 and waited < 5 and other == 0


@pytest.mark.parametrize("make", feeds())
def test_a_change_while_nobody_waits_is_not_lost(make) -> None:
    feed = make()
    user = uuid.uuid4().hex

    async def scenario() -> int:
        seen = feed.version(user)
        if isinstance(feed, RedisFeed):
            await feed.wait(user, seen, 0.3)
        feed.publish(user)  # between two waits (the page was reloading)
        await asyncio.sleep(0.3)
        return await feed.wait(user, seen, 0.05)  # returns at once: the version moved

    assert asyncio.run(scenario()) == 1


def test_a_timed_out_wait_leaves_nothing_behind() -> None:
    feed = LocalFeed()
    asyncio.run(feed.wait("u", 0, 0.01))
    assert feed.waiting() == 0


def test_only_a_commit_tells(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from vgen_app.db import session_scope
    from vgen_app.services import changes

    told: list[str] = []
    feed = LocalFeed()
    monkeypatch.setattr(feed, "publish", told.append)
    monkeypatch.setattr(changes, "get_feed", lambda: feed)
    with session_scope() as db:
        changes.touch(db, "ann")
        db.rollback()
        db.commit()
    assert told == []
    with session_scope() as db:
        changes.touch(db, "ann", "bob")
        assert told == []  # not before the commit
        db.commit()
    assert sorted(told) == ["ann", "bob"]
