"""Reflex's disk state manager (`make run` without Redis), made to scan its folder once a minute.

`StateManagerDisk` keeps every tab's state in memory and writes the changed substates to one
`.pkl` file each, 2 s after an event (its debounce). After every batch of writes its write-queue
loop also lists the whole states folder and `stat`s every file to delete the expired ones
(`_purge_expired_states`). With 200 open tabs the folder holds ~4,000 files: ~20 ms of CPU per
scan, and with events arriving a few per second the loop wakes (and scans) for nearly every
event: that was ~20 ms of server CPU per paced event, ten times the event itself
(BENCHMARKS.md, note 1). Files expire after an hour (`rx.Config.redis_token_expiration`, which the disk manager uses too), so one
scan a minute deletes them just as surely: the first call (at start-up) scans, later calls scan
only when `PURGE_EVERY_S` has passed since the last scan. Writes, reads and the in-memory expiry
of tabs are untouched.
"""

from __future__ import annotations

import threading
import time

from reflex.istate.manager.disk import StateManagerDisk

PURGE_EVERY_S = 60.0

_scan_all = StateManagerDisk._purge_expired_states
_now = time.monotonic
_lock = threading.Lock()
_last_scan: dict[int, float] = {}  # id(manager) -> time.monotonic() of its last scan


def _purge_expired_states_at_most_once_a_minute(self: StateManagerDisk) -> None:
    now = _now()
    with _lock:
        last = _last_scan.get(id(self))
        if last is not None and now - last < PURGE_EVERY_S:
            return
        _last_scan[id(self)] = now
    _scan_all(self)


def install() -> None:
    """Idempotent: the app module calls it once at import."""
    StateManagerDisk._purge_expired_states = _purge_expired_states_at_most_once_a_minute
