"""The local generation simulator: speaks the generation API's contract (docs/generation-api.md)
on this machine and makes real media with ffmpeg. The default when GENERATION_API_URL is unset."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

try:
    import fcntl
except ImportError:  # Windows: no flock; orphaned simulator jobs are not resumed there
    fcntl = None  # type: ignore[assignment]

from vgen_app.adapters import media
from vgen_app.adapters.generation import (
    FAILED,
    PROCESSING,
    QUEUED,
    SUCCEEDED,
    GenerationError,
    Job,
    JobNotFound,
    JobRejected,
    model_slots,
    write_atomic,
)

log = logging.getLogger("vgen.generation")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vgen-simulator")
        return _executor


_JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _local_path(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


class Simulator:
    """The generation service, simulated on this machine: jobs as JSON files under `workdir/jobs`
    (so every process on the machine sees them), work done with ffmpeg in a background thread.

    Like a real service, it does not drop accepted work when a process dies: the process working on
    a job holds an exclusive lock on `workdir/locks/<job>.lock` from submit until the job is final.
    The kernel releases it when that process dies (kill -9 included), so a job still unfinished
    whose lock is free is an orphan, and the next process that polls it resumes the work.
    """

    name = "simulator"

    def __init__(
        self, workdir: Path, delay_s: float = 3.0, failure_rate: float = 0.0, expiry_s: float = 3600
    ) -> None:
        self.workdir = Path(workdir)
        self.delay_s = max(0.0, float(delay_s))
        self.failure_rate = min(max(float(failure_rate), 0.0), 1.0)
        self.expiry_s = float(expiry_s)
        self.jobs_dir = self.workdir / "jobs"
        self.results_dir = self.workdir / "results"

    # -- storage of jobs ---------------------------------------------------------------------
    def _job_path(self, job_id: str) -> Path:
        if not _JOB_ID_RE.match(job_id):
            raise JobNotFound(f"job {job_id!r} is unknown")
        return self.jobs_dir / f"{job_id}.json"

    def _load(self, job_id: str) -> dict:
        try:
            return json.loads(self._job_path(job_id).read_text())
        except FileNotFoundError as exc:
            raise JobNotFound(f"job {job_id} is unknown (expired or never existed)") from exc
        except (OSError, ValueError) as exc:
            raise GenerationError(f"job {job_id} cannot be read: {exc}") from exc

    def _save(self, record: dict) -> None:
        data = json.dumps(record, indent=1).encode()
        write_atomic(self._job_path(record["id"]), lambda out: out.write(data))

    def _expired(self, record: dict, now: float) -> bool:
        finished = record.get("finished_at")
        if finished is None:
            return False
        return now - max(finished, record.get("ready_at") or 0) > self.expiry_s

    def _forget(self, record: dict) -> None:
        self._job_path(record["id"]).unlink(missing_ok=True)
        if record.get("result_path"):
            Path(record["result_path"]).unlink(missing_ok=True)
        self._lock_path(record["id"]).unlink(missing_ok=True)
        client_ref = str((record.get("params") or {}).get("client_ref") or "")
        if client_ref:  # a forgotten job's key is free again
            ref_path = self._ref_path(client_ref)
            with contextlib.suppress(OSError):
                if ref_path.read_text().strip() == record["id"]:
                    ref_path.unlink()

    def _ref_path(self, client_ref: str) -> Path:
        return self.workdir / "refs" / hashlib.sha256(client_ref.encode()).hexdigest()

    # -- who works on a job ------------------------------------------------------------------------
    def _lock_path(self, job_id: str) -> Path:
        return self.workdir / "locks" / f"{job_id}.lock"

    def _claim(self, job_id: str) -> int | None:
        """The job's lock (an open descriptor), or None while another worker — in this process or
        any other — holds it. Closing the descriptor, or the holder's death, releases it."""
        if fcntl is None:
            return -1
        path = self._lock_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by ffmpeg (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def _release(lock: int | None) -> None:
        if lock is not None and lock >= 0:
            os.close(lock)

    def _resume_if_orphaned(self, job_id: str) -> bool:
        """Take over an unfinished job whose worker died (its lock is free): work it here."""
        if fcntl is None:
            return False
        lock = self._claim(job_id)
        if lock is None:
            return False  # its worker is alive
        try:
            record = self._load(job_id)  # read again under the lock: it may have just finished
        except GenerationError:
            self._release(lock)
            return False
        if record["status"] not in (QUEUED, PROCESSING):
            self._release(lock)
            return False
        log.warning("simulator job %s lost its worker (process died); resuming it", job_id)
        _pool().submit(self._work, job_id, lock)
        return True

    def sweep(self) -> int:
        """Forget every job finished more than `expiry_s` ago; returns how many."""
        now, forgotten = time.time(), 0
        for path in self.jobs_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if self._expired(record, now):
                self._forget(record)
                forgotten += 1
        return forgotten

    # -- the contract ------------------------------------------------------------------------
    def submit(self, model: str, inputs: dict[str, str], params: dict | None = None) -> str:
        slots = model_slots(model)
        if slots is None:
            raise JobRejected(f"unknown model {model!r}")
        if set(inputs) != set(slots):
            raise JobRejected(
                f"model {model} needs inputs {', '.join(slots)}; got {sorted(inputs)}"
            )
        for slot, url in inputs.items():
            scheme = urlsplit(url).scheme
            if scheme == "file":
                if not _local_path(url).is_file():
                    raise JobRejected(f"input {slot} cannot be read: {url}")
            elif scheme not in ("http", "https"):
                raise JobRejected(f"input {slot} must be a file:// or http(s):// URL")
        self.sweep()
        # `params.client_ref` is an idempotency key: a repeated submit (a worker that died between
        # submitting and recording the job id) gets the same job back instead of a second one.
        client_ref = str((params or {}).get("client_ref") or "")
        ref_path = None
        if client_ref:
            ref_path = self._ref_path(client_ref)
            ref_path.parent.mkdir(parents=True, exist_ok=True)
            existing = self._existing_job(ref_path)
            if existing:
                self._resume_if_orphaned(existing)  # its worker may have died with the submitter
                return existing
        job_id = f"sim_{secrets.token_hex(12)}"
        lock = self._claim(job_id)  # held until the job is final (a new id: always free)
        record = {
            "id": job_id,
            "model": model,
            "inputs": dict(inputs),
            "params": params or {},
            "status": QUEUED,
            "created_at": time.time(),
            "started_at": None,
            "finished_at": None,
            "delay_s": self.delay_s,
            "result_path": None,
            "error": None,
        }
        try:
            self._save(record)
            if ref_path is not None and not self._link_ref(ref_path, job_id):
                # A concurrent twin won: its job is the one.
                self._job_path(job_id).unlink(missing_ok=True)
                self._release(lock)
                return self._existing_job(ref_path) or job_id
            _pool().submit(self._work, job_id, lock)
        except BaseException:
            self._release(lock)
            raise
        return job_id

    def _existing_job(self, ref_path: Path) -> str | None:
        """The job an idempotency key names, if that job still exists (else the key is freed)."""
        try:
            existing = ref_path.read_text().strip()
        except FileNotFoundError:
            return None
        if existing and self._job_path(existing).exists():
            return existing
        ref_path.unlink(missing_ok=True)  # names a job that is gone: stale
        return None

    @staticmethod
    def _link_ref(ref_path: Path, job_id: str) -> bool:
        """Point the key at the job, complete or not at all (a hard link of a written file is
        atomic and fails if the key exists). False if another job took the key first."""
        fd, tmp = tempfile.mkstemp(dir=ref_path.parent, prefix=".ref.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(job_id)
            os.link(tmp, ref_path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def get(self, job_id: str) -> Job:
        record = self._load(job_id)
        if self._expired(record, time.time()):
            self._forget(record)
            raise JobNotFound(f"job {job_id} has expired")
        if record["status"] in (QUEUED, PROCESSING):
            self._resume_if_orphaned(job_id)
        progress = 0.0
        status = record["status"]
        now = time.time()
        # The media is made at once; the job only shows its outcome once its delay has passed
        # (no thread sleeps through the delay, so shutting down never waits for it).
        if status in (SUCCEEDED, FAILED) and now < (record.get("ready_at") or 0):
            status = PROCESSING
        if status == PROCESSING and record.get("started_at"):
            elapsed = now - record["started_at"]
            progress = min(elapsed / record["delay_s"], 0.99) if record["delay_s"] else 0.99
        elif status == SUCCEEDED:
            progress = 1.0
        if status != record["status"]:
            return Job(record["id"], status, progress, None, None, {"model": record["model"]})
        result_url = Path(record["result_path"]).as_uri() if record.get("result_path") else None
        extra = {"model": record["model"], "created_at": record["created_at"]}
        return Job(record["id"], record["status"], progress, result_url, record.get("error"), extra)

    def fetch_result(self, job: Job, dest: Path) -> None:
        current = self.get(job.id)  # JobNotFound once expired
        if current.status != SUCCEEDED or not current.result_url:
            raise GenerationError(f"job {job.id} has no result (status {current.status})")
        source = _local_path(current.result_url)
        try:
            with source.open("rb") as src:
                write_atomic(Path(dest), lambda out: shutil.copyfileobj(src, out, 1024 * 1024))
        except FileNotFoundError as exc:
            raise JobNotFound(f"the result of job {job.id} is gone") from exc

    # -- the work (background thread) ----------------------------------------------------------
    def _work(self, job_id: str, lock: int | None = None) -> None:
        """Make the job's media; `lock` (the job's claim) is released once the job is final."""
        try:
            self._work_locked(job_id)
        finally:
            self._release(lock)

    def _work_locked(self, job_id: str) -> None:
        try:
            record = self._load(job_id)
        except GenerationError:
            return
        if record["status"] not in (QUEUED, PROCESSING):
            return
        # A resumed job keeps its first start: the delay is the service's time, not ours.
        started = record.get("started_at") or time.time()
        ready_at = record.get("ready_at") or started + float(record.get("delay_s") or 0)
        record.update(
            status=PROCESSING,
            started_at=started,
            ready_at=ready_at,
            runs=int(record.get("runs") or 0) + 1,
        )
        self._save(record)
        self._clear_leftovers(job_id)
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{job_id}.", dir=self.workdir / "tmp"))
        try:
            paths = {
                slot: self._fetch_input(url, scratch / slot)
                for slot, url in record["inputs"].items()
            }
            if random.random() < self.failure_rate:
                raise media.MediaError("simulated failure (GENERATION_SIM_FAILURE_RATE)")
            out = self.results_dir / f"{job_id}.mp4"
            if record["model"] == "lipsync":
                media.make_lipsync(paths["video"], paths["audio"], out)
            elif record["model"] == "faceswap":
                media.make_faceswap(paths["video"], paths["image"], out)
            else:
                media.make_talking_photo(paths["image"], paths["audio"], out)
            record.update(status=SUCCEEDED, result_path=str(out))
        except (media.MediaError, httpx.HTTPError, OSError) as exc:
            record.update(status=FAILED, error=str(exc) or type(exc).__name__)
        except Exception as exc:  # a background thread must always leave a final state behind
            log.exception("simulator job %s crashed", job_id)
            record.update(status=FAILED, error=f"internal simulator error: {exc}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        record["finished_at"] = time.time()
        self._save(record)

    def _clear_leftovers(self, job_id: str) -> None:
        """What a worker killed mid-job left behind (scratch files, a half-made result): only the
        job's lock holder calls this, so nothing here is in use."""
        for scratch in (self.workdir / "tmp").glob(f"{job_id}.*"):
            shutil.rmtree(scratch, ignore_errors=True)
        for partial in self.results_dir.glob(f".{job_id}.mp4.*.tmp"):
            partial.unlink(missing_ok=True)

    @staticmethod
    def _fetch_input(url: str, dest: Path) -> Path:
        if urlsplit(url).scheme == "file":
            return _local_path(url)
        with httpx.stream("GET", url, timeout=60, follow_redirects=True) as resp:
            resp.raise_for_status()
            write_atomic(dest, lambda out: out.writelines(resp.iter_bytes()))
        return dest
