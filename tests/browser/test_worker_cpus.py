"""The app as `make run` starts it pins each worker's event loop to one CPU, the workers spread
over the CPUs (vgen_app/cpu.py), in both shapes: one worker on SQLite, three on PostgreSQL +
Redis. Read from /proc, outside the server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def cpus(text: str) -> list[int]:
    """A Cpus_allowed_list ("0-1", "0,2-3") as CPU numbers."""
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def status(pid: int, tid: int | None = None) -> dict[str, str]:
    path = Path(f"/proc/{pid}") / (f"task/{tid}" if tid else "") / "status"
    return dict(line.split(":\t", 1) for line in path.read_text().splitlines() if ":\t" in line)


def workers(pgid: int) -> list[int]:
    """The server's worker processes: the deepest Python processes of its group."""
    group = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if b"reflex" in cmd or b"python" in cmd:
                        group.append(int(entry))
            except (OSError, ProcessLookupError):
                continue
    parents = {int(status(p)["PPid"]) for p in group}
    return [p for p in group if p not in parents]


@pytest.mark.skipif(len(ALLOWED) < 2, reason="pinning needs two CPUs or more")
def test_each_worker_loop_has_one_cpu_and_the_workers_spread(app_server) -> None:
    pids = workers(app_server.pgid)
    assert pids, "no worker process found"
    loops = {pid: cpus(status(pid, pid)["Cpus_allowed_list"].strip()) for pid in pids}
    assert all(len(c) == 1 and c[0] in ALLOWED for c in loops.values()), loops
    used = {c[0] for c in loops.values()}
    assert len(used) == min(len(pids), len(ALLOWED)), loops  # three workers on two CPUs: both
