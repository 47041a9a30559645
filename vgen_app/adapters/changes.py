"""A per-user change feed: "something this user sees has changed" (a run, a balance, a status).

Open pages wait on it instead of polling the database. Each process keeps, per user, a version
number that a change bumps, and wakes whoever waits on it; `wait(user, seen)` returns at once when
the version has moved past `seen`, so a change that lands while a page is busy reloading is not
missed. Two implementations:

- `LocalFeed` (the default, one process): `publish` bumps the version in this process.
- `RedisFeed` (REDIS_URL set: several workers): `publish` goes to a Redis channel; a listener in
  each process bumps its local versions for every message, so a change made in one worker (the
  generation worker's leader, a webhook) reaches pages open in every other.

`publish` may be called from any thread (services run in worker threads); `wait` runs on the
event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from typing import Protocol

from vgen_app.config import get_settings

log = logging.getLogger("vgen.changes")

CHANNEL = "vgen:changes"


class ChangeFeed(Protocol):
    def publish(self, user_id: str) -> None: ...

    async def wait(self, user_id: str, seen: int, timeout: float) -> int:
        """The user's version once it is past `seen`, or after `timeout` s (then maybe `seen`)."""
        ...

    def version(self, user_id: str) -> int: ...


class LocalFeed:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._versions: dict[str, int] = defaultdict(int)
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future]]] = (
            defaultdict(set)
        )

    def version(self, user_id: str) -> int:
        with self._lock:
            return self._versions.get(user_id, 0)

    def bump(self, user_id: str) -> None:
        with self._lock:
            self._versions[user_id] += 1
            waiters = self._waiters.pop(user_id, set())
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    publish = bump

    async def wait(self, user_id: str, seen: int, timeout: float) -> int:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        with self._lock:
            current = self._versions.get(user_id, 0)
            if current > seen:
                return current
            entry = (loop, future)
            self._waiters[user_id].add(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.get(user_id, set()).discard(entry)
                if not self._waiters.get(user_id):
                    self._waiters.pop(user_id, None)
        return self.version(user_id)

    def waiting(self) -> int:
        """How many waits are open (tests: a closed page's follower must not stay behind)."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class RedisFeed(LocalFeed):
    """Versions kept per process as in LocalFeed, bumped by the messages of a Redis channel."""

    def __init__(self, url: str) -> None:
        super().__init__()
        import redis

        self._url = url
        self._client = redis.Redis.from_url(url, socket_timeout=2)
        self._listener: asyncio.Task | None = None
        self._listener_loop: asyncio.AbstractEventLoop | None = None

    def publish(self, user_id: str) -> None:
        try:
            self._client.publish(CHANNEL, user_id)
        except Exception:  # Redis down: open pages catch up on their next event
            log.warning("could not publish a change for %s", user_id, exc_info=True)
            self.bump(user_id)  # at least this process's pages

    async def wait(self, user_id: str, seen: int, timeout: float) -> int:
        self._ensure_listener()
        return await super().wait(user_id, seen, timeout)

    def _ensure_listener(self) -> None:
        loop = asyncio.get_running_loop()
        if self._listener is None or self._listener.done() or self._listener_loop is not loop:
            self._listener_loop = loop
            self._listener = loop.create_task(self._listen())

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        delay = 0.5
        while True:
            client = aioredis.Redis.from_url(self._url)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    delay = 0.5
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            data = message["data"]
                            self.bump(data.decode() if isinstance(data, bytes) else str(data))
            except asyncio.CancelledError:
                raise
            except Exception:  # reconnect with backoff; waits time out meanwhile
                log.warning("change feed listener lost Redis; retrying", exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
            finally:
                await client.aclose()


_feed: ChangeFeed | None = None
_feed_key: str | None = None
_feed_lock = threading.Lock()


def get_feed() -> ChangeFeed:
    global _feed, _feed_key
    url = get_settings().redis_url
    with _feed_lock:
        if _feed is None or _feed_key != url:
            _feed = RedisFeed(url) if url else LocalFeed()
            _feed_key = url
        return _feed
