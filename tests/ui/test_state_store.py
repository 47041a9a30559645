"""The disk state manager's folder scan (vgen_app/ui/state_store.py): once a minute, not per event."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from reflex.istate.manager.disk import StateManagerDisk

import vgen_app.vgen_app  # noqa: F401 - the app installs the patch at import
from vgen_app.ui import state_store


def _expired_file(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(b"state")
    old = time.time() - 3600
    os.utime(path, (old, old))
    return path


def test_expired_states_are_deleted_by_a_scan_at_most_once_a_minute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (
        StateManagerDisk._purge_expired_states
        is state_store._purge_expired_states_at_most_once_a_minute
    )
    monkeypatch.setenv("REFLEX_STATES_WORKDIR", str(tmp_path))
    clock = [1_000.0]
    monkeypatch.setattr(state_store, "_now", lambda: clock[0])
    first = _expired_file(tmp_path, "before-start.pkl")
    manager = StateManagerDisk(token_expiration=60)  # start-up scans at once
    assert manager.states_directory == tmp_path
    assert not first.exists()

    later = _expired_file(tmp_path, "expired-later.pkl")
    clock[0] += state_store.PURGE_EVERY_S - 1
    manager._purge_expired_states()  # the write loop after an event: no scan within the minute
    assert later.exists()

    clock[0] += 2
    fresh = tmp_path / "fresh.pkl"
    fresh.write_bytes(b"state")
    manager._purge_expired_states()
    assert not later.exists()  # a minute on, the scan deletes what expired
    assert fresh.exists()  # and keeps what did not


def test_the_app_process_switches_threads_every_millisecond() -> None:
    """The database threads get the GIL back from a busy event loop within 1 ms, not CPython's
    default 5 ms (vgen_app.py, BENCHMARKS.md note 1)."""
    import sys

    app_module = sys.modules["vgen_app.vgen_app"]
    assert app_module.GIL_SWITCH_S == 0.001
    assert sys.getswitchinterval() == pytest.approx(app_module.GIL_SWITCH_S)
