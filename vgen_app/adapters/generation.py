"""The generation service, over the HTTP JSON contract in docs/generation-api.md.

`HttpGeneration(base_url, api_key)` talks to our generation API; `Simulator(...)` (the default, when
GENERATION_API_URL is unset) speaks the same contract locally and makes real media with ffmpeg.
All methods block (HTTP, files, ffmpeg): call from a worker thread, never on the event loop.
"""

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, unquote, urljoin, urlsplit

import httpx

try:
    import fcntl
except ImportError:  # Windows: no flock; orphaned simulator jobs are not resumed there
    fcntl = None  # type: ignore[assignment]

from vgen_app import catalog
from vgen_app.adapters import media
from vgen_app.config import VAR_DIR, get_settings

log = logging.getLogger("vgen.generation")

QUEUED = "queued"
PROCESSING = "processing"
SUCCEEDED = "succeeded"
FAILED = "failed"
STATUSES = (QUEUED, PROCESSING, SUCCEEDED, FAILED)


def model_slots(model: str) -> tuple[str, ...] | None:
    """The input slots a model needs, from the catalog (the simulator checks them; the real API
    does the same); None for a model the catalog does not list."""
    spec = catalog.get(model)
    return tuple(s.name for s in spec.slots) if spec else None


class GenerationError(Exception):
    """Transient: the service answered 5xx, timed out or was unreachable. Retry later."""


class JobNotFound(GenerationError):
    """The service does not know the job (expired or vanished). Final."""


class JobRejected(Exception):
    """The service refused the job (4xx other than 404): final, the run fails."""


@dataclass(frozen=True)
class Job:
    id: str
    status: str  # queued | processing | succeeded | failed
    progress: float = 0.0  # 0..1
    result_url: str | None = None
    error: str | None = None
    extra: dict = field(default_factory=dict)


class GenerationProvider(Protocol):
    name: str  # "simulator" | "api"

    def submit(self, model: str, inputs: dict[str, str], params: dict | None = None) -> str:
        """Start a job: `inputs` maps slot name -> URL readable by the service. Returns the job id."""

    def get(self, job_id: str) -> Job:
        """The job's current state; JobNotFound once it expired or vanished."""

    def fetch_result(self, job: Job, dest: Path) -> None:
        """Download a succeeded job's result to `dest` (JobNotFound if it is gone)."""


def _write_atomic(dest: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(binary_file)` on a temp file beside `dest`, then rename it over `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def job_from_json(data: Any) -> Job:
    """A Job from the contract's JSON; GenerationError if it does not follow the contract."""
    if not isinstance(data, dict):
        raise GenerationError("malformed job from the generation service: not an object")
    job_id, status = data.get("id"), data.get("status")
    if not isinstance(job_id, str) or not job_id or status not in STATUSES:
        raise GenerationError(f"malformed job from the generation service: {str(data)[:200]}")
    progress = data.get("progress") or 0.0
    if not isinstance(progress, int | float) or isinstance(progress, bool):
        raise GenerationError(f"malformed progress from the generation service: {progress!r}")
    result_url, error = data.get("result_url"), data.get("error")
    if not isinstance(result_url, str | None) or not isinstance(error, str | None):
        raise GenerationError("malformed job from the generation service: result_url/error")
    if status == SUCCEEDED and not result_url:
        raise GenerationError("the generation service reports success without a result_url")
    known = {"id", "status", "progress", "result_url", "error"}
    extra = {k: v for k, v in data.items() if k not in known}
    progress = 1.0 if status == SUCCEEDED else min(max(float(progress), 0.0), 1.0)
    return Job(job_id, status, progress, result_url, error, extra)


class HttpGeneration:
    """Our generation API over HTTP (httpx, sync). See docs/generation-api.md."""

    name = "api"

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 10) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(timeout=timeout, headers={"User-Agent": "vgen"})

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, url, headers=self._auth, **kwargs)
        except httpx.TimeoutException as exc:
            raise GenerationError(f"generation service timed out ({self.timeout} s)") from exc
        except httpx.HTTPError as exc:
            raise GenerationError(f"generation service unreachable: {exc}") from exc

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise GenerationError(
                f"generation service sent malformed JSON (HTTP {response.status_code})"
            ) from exc

    @staticmethod
    def _reason(response: httpx.Response) -> str:
        try:
            data = response.json()
        except ValueError:
            return response.text[:300]
        return str(data.get("error") if isinstance(data, dict) else data)[:300]

    def submit(self, model: str, inputs: dict[str, str], params: dict | None = None) -> str:
        body = {"model": model, "inputs": inputs, "params": params or {}}
        response = self._request("POST", f"{self.base_url}/v1/jobs", json=body)
        code = response.status_code
        if code in (200, 201, 202):
            data = self._json(response)
            if not isinstance(data, dict):
                raise GenerationError("malformed answer to submit: not an object")
            return job_from_json({"status": QUEUED, **data}).id
        # 404: wrong URL, 408/425/429: come back later — not the job's fault, so retryable.
        if code in (404, 408, 425, 429) or code >= 500 or code < 400:
            raise GenerationError(f"generation service answered {code} on submit")
        raise JobRejected(f"generation service refused the job ({code}): {self._reason(response)}")

    def get(self, job_id: str) -> Job:
        response = self._request("GET", f"{self.base_url}/v1/jobs/{quote(job_id, safe='')}")
        if response.status_code in (404, 410):
            raise JobNotFound(f"job {job_id} is unknown to the generation service")
        if response.status_code != 200:
            raise GenerationError(f"generation service answered {response.status_code} on poll")
        return job_from_json(self._json(response))

    def fetch_result(self, job: Job, dest: Path) -> None:
        if not job.result_url:
            raise GenerationError(f"job {job.id} has no result_url")
        url = urljoin(f"{self.base_url}/", job.result_url)
        # The key goes only to the API's own origin (httpx also drops it on cross-origin redirects).
        same_origin = urlsplit(url)[:2] == urlsplit(self.base_url)[:2]
        headers = self._auth if same_origin else {}
        try:
            with self._client.stream("GET", url, headers=headers, follow_redirects=True) as resp:
                if resp.status_code in (404, 410):
                    raise JobNotFound(f"the result of job {job.id} is gone")
                if resp.status_code != 200:
                    raise GenerationError(f"result download answered {resp.status_code}")
                _write_atomic(Path(dest), lambda out: out.writelines(resp.iter_bytes()))
        except httpx.TimeoutException as exc:
            raise GenerationError(f"result download timed out ({self.timeout} s)") from exc
        except httpx.HTTPError as exc:
            raise GenerationError(f"result download failed: {exc}") from exc


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
        _write_atomic(self._job_path(record["id"]), lambda out: out.write(data))

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
                _write_atomic(Path(dest), lambda out: shutil.copyfileobj(src, out, 1024 * 1024))
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
            _write_atomic(dest, lambda out: out.writelines(resp.iter_bytes()))
        return dest


_providers: dict[tuple, GenerationProvider] = {}
_providers_lock = threading.Lock()


def get_generation() -> GenerationProvider:
    s = get_settings()
    api_url = getattr(s, "generation_api_url", None)
    if api_url:
        key: tuple = ("api", api_url, getattr(s, "generation_api_key", None))
    else:
        key = (
            "simulator",
            str(getattr(s, "generation_sim_dir", VAR_DIR / "simulator")),
            float(getattr(s, "generation_sim_delay_seconds", 3.0)),
            float(getattr(s, "generation_sim_failure_rate", 0.0)),
            float(getattr(s, "generation_sim_expiry_seconds", 3600.0)),
        )
    with _providers_lock:
        provider = _providers.get(key)
        if provider is None:
            if key[0] == "api":
                provider = HttpGeneration(key[1], key[2])
            else:
                provider = Simulator(Path(key[1]), key[2], key[3], key[4])
            _providers[key] = provider
        return provider
