"""The generation service, over the HTTP JSON contract in docs/generation-api.md.

`HttpGeneration(base_url, api_key)` talks to our generation API; `Simulator(...)` (the default, when
GENERATION_API_URL is unset) speaks the same contract locally and makes real media with ffmpeg.
All methods block (HTTP, files, ffmpeg): call from a worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, urljoin, urlsplit

import httpx

try:
    import fcntl
except ImportError:  # Windows: no flock; orphaned simulator jobs are not resumed there
    fcntl = None  # type: ignore[assignment]

from vgen_app import catalog
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


def write_atomic(dest: Path, write: Callable[[BinaryIO], object]) -> None:
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
                write_atomic(Path(dest), lambda out: out.writelines(resp.iter_bytes()))
        except httpx.TimeoutException as exc:
            raise GenerationError(f"result download timed out ({self.timeout} s)") from exc
        except httpx.HTTPError as exc:
            raise GenerationError(f"result download failed: {exc}") from exc


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
                from vgen_app.adapters.simulator import Simulator  # it imports this module

                provider = Simulator(Path(key[1]), key[2], key[3], key[4])
            _providers[key] = provider
        return provider
