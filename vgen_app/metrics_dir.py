"""The folder where every app worker keeps its Prometheus counters (prometheus-client's
multiprocess mode), made by the process that launches the workers.

Production runs several Granian worker processes; a scrape lands on any one of them, so each
worker writes its counters to memory-mapped files of its own in one shared folder
(`PROMETHEUS_MULTIPROC_DIR`) and the scrape sums the files of all of them
(services/metrics.py). prometheus-client reads `PROMETHEUS_MULTIPROC_DIR` when it is imported,
so the folder has to be in the environment before any worker imports it.

`rxconfig.py` calls `prepare()`. It is loaded first by `reflex run` — the process that then
starts Granian, which forks (or spawns) the workers from it: they inherit the variable. That
launcher makes a fresh folder for this launch, `METRICS_DIR/<its pid>` (default
`var/metrics/<pid>`), and removes the folders of launchers that are gone. A folder per launch
(rather than one folder wiped at start) means that a second app, a test run or a `reflex`
command started in the same checkout never wipes the files of an app that is running.

`PROMETHEUS_MULTIPROC_DIR` set in the environment is used as it is (created if missing, never
wiped: prometheus-client's own rule is that whoever sets it empties it before the start).
A worker process that finds no folder (Granian started some other way, without the variable),
or a process that imported prometheus-client before calling `prepare()` (the app imported before
its config, as pytest does), counts on its own: its scrape then shows its own counters only.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

from vgen_app.config import get_settings

ENV = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger("vgen.metrics")


def prepare() -> Path | None:
    """This process's metrics folder, made now if this process launches the workers."""
    given = os.environ.get(ENV)
    if not given and "prometheus_client" in sys.modules:
        # Too late to switch this process to the multiprocess mode (the app was imported before
        # the config: pytest, or Granian started without `reflex run`): it counts on its own,
        # and the processes it starts should not write to a folder it never reads.
        return None
    if given:
        try:
            Path(given).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("metrics folder %s cannot be made: %s", given, exc)
        return Path(given)
    if multiprocessing.parent_process() is not None:
        return None  # a worker without a folder from its launcher: counts on its own
    base = get_settings().metrics_dir
    mine = base / str(os.getpid())
    try:
        _remove_gone(base)
        shutil.rmtree(mine, ignore_errors=True)  # a dead launcher's, whose pid this one got
        mine.mkdir(parents=True)
    except OSError as exc:
        log.warning(
            "metrics folder %s cannot be made (%s): each worker counts on its own", mine, exc
        )
        return None
    os.environ[ENV] = str(mine)
    return mine


def _remove_gone(base: Path) -> None:
    """Remove the folders of earlier launchers that are no longer running."""
    if not base.is_dir():
        return
    for entry in base.iterdir():
        if entry.is_dir() and entry.name.isdigit() and not _alive(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True
