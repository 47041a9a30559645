"""One core for a web worker's Python: its event loop and its database threads run on the same CPU.

Why. A UI event's database read runs on a database thread (file and network I/O stay off the
event loop), and that thread and the loop pass the GIL back and forth several times per read:
for the thread's wake-up, after every SQLite step or psycopg round trip, for the result. When
the two threads sit on different cores, each hand-off moves the interpreter's working set from
one core's caches to the other's, and both threads then run cold: the dashboard's read costs
~60 µs of CPU on the loop itself but ~0.45 ms through a thread on another core. On the same
core the hand-off is a plain context switch (bench/event_roundtrip.py, 200 tabs refreshing My
tasks at once: ~2.1 ms of worker CPU per event unpinned, ~0.9 ms pinned; BENCHMARKS.md, note 1).
A worker's Python can use one core at a time anyway (the GIL), so the pin costs it no
parallelism: what runs without the GIL for long stays unpinned.

What is pinned: the worker's event-loop thread and the database threads (db.py's pools: they
call `join_loop_core` as they start). What is not: bcrypt's threads and the loop's default
executor (file writes, the generation worker's rounds and the ffmpeg they start: a child
process inherits the CPUs of the thread that starts it) call `unpin`, which gives them every
CPU the process had.

When: in a server worker process only (granian's `granian-worker`, one per GRANIAN_WORKERS),
with more than one CPU allowed, and `CPU_PIN` not switched off; never in tests' own processes, a
CLI command or a one-CPU container. The workers spread: the k-th of its parent's workers (by
start time) takes the k-th allowed CPU, round robin. Threads the loop starts later inherit its
CPU unless they say otherwise: granian's I/O threads and AnyIO's worker threads, which hand
requests to the same interpreter, share it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from vgen_app.config import get_settings

log = logging.getLogger(__name__)

SERVER_WORKER = "granian-worker"  # granian's name for its worker processes
# Threads that share the loop's core: the database pools' names (db.py).
PINNED_PREFIXES = ("vgen-db",)

_core: int | None = None  # this process's loop core, once pinned
_pinned_pid = 0  # the process that pinned (a forked child inherits the globals, not the pin's
# purpose: it checks the pid)
_every_cpu: frozenset[int] = frozenset()  # what the process had before the pin


def choose_core(allowed: Iterable[int], ordinal: int) -> int | None:
    """The CPU for the `ordinal`-th worker's loop: the allowed CPUs in turn; None with fewer than
    two CPUs (nothing to gain)."""
    cpus = sorted(allowed)
    if len(cpus) < 2:
        return None
    return cpus[ordinal % len(cpus)]


def _stat(pid: int | str) -> tuple[int, int]:
    """(parent pid, start time) of a process, from /proc."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rpartition(b")")[2].split()
    return int(fields[1]), int(fields[19])


def _cmdline(pid: int | str) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return fh.read()


def worker_ordinal() -> int:
    """This process's place among its parent's children that run the same command line (the
    server's workers), oldest first; 0 when /proc cannot tell."""
    me = os.getpid()
    try:
        parent, _ = _stat(me)
        mine = _cmdline(me)
    except OSError:
        return 0
    siblings = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid, started = _stat(entry)
            if ppid == parent and _cmdline(entry) == mine:
                siblings.append((started, int(entry)))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    ordered = [pid for _, pid in sorted(siblings)]
    return ordered.index(me) if me in ordered else 0


def loop_core() -> int | None:
    """This process's pinned core, or None when nothing is pinned."""
    return _core if _pinned_pid == os.getpid() else None


def pin_loop_thread(*, force: bool = False) -> int | None:
    """Pin the calling thread (the worker's event loop, from a lifespan task) and the database
    threads already running to one core; give the loop a default executor whose threads are
    not pinned. Returns the core, or None when nothing was pinned (not a server worker, one
    CPU, `CPU_PIN=false`, or the OS refused). `force`: outside a server worker (tests)."""
    global _core, _pinned_pid, _every_cpu
    if not force and (
        not get_settings().cpu_pin or multiprocessing.current_process().name != SERVER_WORKER
    ):
        return None
    if not hasattr(os, "sched_setaffinity"):  # not Linux
        return None
    allowed = frozenset(os.sched_getaffinity(0))
    core = choose_core(allowed, worker_ordinal())
    if core is None:
        return None
    loop = asyncio.get_running_loop()
    # Made before the pin; its threads are made later by whoever submits (the loop): unpin them.
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="vgen-io", initializer=unpin))
    try:
        os.sched_setaffinity(0, {core})
    except OSError as exc:  # a cpuset that changed under us: run unpinned
        log.warning("could not pin the event loop to CPU %s: %s", core, exc)
        return None
    _core, _pinned_pid, _every_cpu = core, os.getpid(), allowed
    for thread in threading.enumerate():  # database threads started before the pin
        if thread.name.startswith(PINNED_PREFIXES) and thread.native_id is not None:
            _set(thread.native_id, {core})
    log.info("event loop and database threads pinned to CPU %s of %s", core, sorted(allowed))
    return core


def join_loop_core() -> None:
    """A database thread's initializer: run on the loop's core (if it is pinned)."""
    core = loop_core()
    if core is not None:
        _set(0, {core})


def unpin() -> None:
    """A thread's initializer for CPU work off the loop (bcrypt, the default executor): every
    CPU the process had, whoever made the thread."""
    if loop_core() is not None:
        _set(0, set(_every_cpu))


def _set(tid: int, cpus: set[int]) -> None:
    try:
        os.sched_setaffinity(tid, cpus)
    except OSError as exc:
        log.warning("could not set the CPUs of thread %s to %s: %s", tid, sorted(cpus), exc)
