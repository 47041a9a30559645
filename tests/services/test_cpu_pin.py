"""A server worker's event loop and database threads share one CPU; bcrypt, the default executor
and the processes it starts keep every CPU (vgen_app/cpu.py). Each case runs in a fresh Python
process: a pin must never reach the test process (and the servers and browsers it starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vgen_app import cpu

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two_cpus = pytest.mark.skipif(len(ALLOWED) < 2, reason="pinning needs two CPUs or more")

# Reports, as JSON, the CPUs of each kind of thread after `pin_loop_thread` ran on the loop.
PROBE = textwrap.dedent(
    """
    import asyncio, json, multiprocessing, os, subprocess, sys
    from vgen_app import cpu, db
    from vgen_app.services import security

    def mine():
        return sorted(os.sched_getaffinity(0))

    def child():  # a process started from the default executor (ffmpeg, pg_dump)
        code = "import os; print(sorted(os.sched_getaffinity(0)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        return json.loads(out.stdout)

    async def main():
        loop = asyncio.get_running_loop()
        out = {"before": mine()}
        out["early_reader"] = await loop.run_in_executor(db._reader_pool(), mine)  # pre-pin
        if os.environ.get("AS_WORKER"):
            multiprocessing.current_process().name = cpu.SERVER_WORKER
        out["core"] = cpu.pin_loop_thread(force=not os.environ.get("AS_WORKER"))
        out["loop"] = mine()
        # both reader threads, the first of which started before the pin
        out["readers"] = [await loop.run_in_executor(db._reader_pool(), mine) for _ in range(6)]
        out["db"] = await loop.run_in_executor(db._db_pool(), mine)
        out["writer"] = await loop.run_in_executor(db._writer_pool(), mine)
        out["default"] = await loop.run_in_executor(None, mine)
        out["to_thread"] = await asyncio.to_thread(mine)
        out["bcrypt"] = await asyncio.to_thread(security._on_bcrypt_thread, mine)
        out["child"] = await asyncio.to_thread(child)
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def run_python(code: str, **env: str) -> str:
    """`code` in a fresh Python process (this checkout on its path); its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def probe(**env: str) -> dict:
    return json.loads(run_python(PROBE, **env).strip().splitlines()[-1])


def test_workers_take_the_allowed_cpus_in_turn() -> None:
    assert [cpu.choose_core({0, 1}, k) for k in range(4)] == [0, 1, 0, 1]
    assert [cpu.choose_core({2, 5, 7}, k) for k in range(4)] == [2, 5, 7, 2]
    assert cpu.choose_core({3}, 0) is None  # one CPU: nothing to pin
    assert cpu.choose_core(set(), 0) is None


def test_sibling_workers_number_themselves_by_start_time() -> None:
    """As granian starts its workers: one forked process after another, same command line."""
    code = textwrap.dedent(
        """
        import multiprocessing, time
        from vgen_app import cpu

        def report(q):
            q.put(cpu.worker_ordinal())
            time.sleep(1.0)  # alive while the later ones look

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            q = ctx.Queue()
            procs = []
            for _ in range(3):
                procs.append(ctx.Process(target=report, args=(q,)))
                procs[-1].start()
                time.sleep(0.05)
            print(sorted(q.get(timeout=30) for _ in procs))
            for p in procs:
                p.join()
        """
    )
    assert run_python(code).split("\n")[-2] == "[0, 1, 2]"  # each its own place: they spread


@needs_two_cpus
def test_the_loop_and_the_database_threads_share_one_cpu_the_rest_keep_every_cpu() -> None:
    out = probe()
    core = out["core"]
    assert core in ALLOWED and out["before"] == ALLOWED
    assert out["loop"] == [core]
    assert out["early_reader"] == ALLOWED  # before the pin...
    assert all(r == [core] for r in out["readers"])  # ...and moved onto the loop's CPU after it
    assert out["db"] == [core] and out["writer"] == [core]
    # off the loop's CPU: bcrypt, the default executor, and what it starts
    assert out["bcrypt"] == ALLOWED
    assert out["default"] == ALLOWED and out["to_thread"] == ALLOWED
    assert out["child"] == ALLOWED


@needs_two_cpus
def test_a_server_worker_pins_itself_unless_switched_off() -> None:
    on = probe(AS_WORKER="1")
    assert on["core"] in ALLOWED and on["loop"] == [on["core"]]
    off = probe(AS_WORKER="1", CPU_PIN="false")
    assert off["core"] is None and off["loop"] == ALLOWED and off["db"] == ALLOWED


def test_outside_a_server_worker_nothing_is_pinned() -> None:
    code = "from vgen_app import cpu; print(cpu.pin_loop_thread(), cpu.loop_core())"
    out = run_python(f"import asyncio\nasync def m():\n    {code}\nasyncio.run(m())")
    assert out.split() == ["None", "None"]
