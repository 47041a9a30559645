"""Generation: HttpGeneration (real httpx) against a local fake API speaking docs/generation-api.md,
and the Simulator making real media."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.fakes.media_samples import make_audio, make_image, make_video
from vgen_app.adapters import generation as gen
from vgen_app.adapters.generation import (
    FAILED,
    SUCCEEDED,
    GenerationError,
    HttpGeneration,
    Job,
    JobNotFound,
    JobRejected,
)
from vgen_app.adapters.media import probe
from vgen_app.adapters.simulator import Simulator
from vgen_app.config import reset_settings

KEY = "sk-test-123"


@pytest.fixture
def api(httpserver: HTTPServer) -> Iterator[HttpGeneration]:
    client = HttpGeneration(httpserver.url_for("/").rstrip("/"), KEY, timeout=2)
    yield client
    client.close()


AUTH = {"Authorization": f"Bearer {KEY}"}

# --- HttpGeneration -----------------------------------------------------------------------------


def test_submit_posts_the_contract_body_with_the_key(
    httpserver: HTTPServer, api: HttpGeneration
) -> None:
    inputs = {"video": "https://files.example/v.mp4", "audio": "https://files.example/a.m4a"}
    body = {"model": "lipsync", "inputs": inputs, "params": {"seed": 7}}
    httpserver.expect_oneshot_request(
        "/v1/jobs", "POST", headers=AUTH, json=body
    ).respond_with_json({"id": "job-1", "status": "queued"}, status=201)
    assert api.submit("lipsync", inputs, {"seed": 7}) == "job-1"
    httpserver.check_assertions()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"id": "j", "status": "queued"}, Job("j", "queued", 0.0)),
        ({"id": "j", "status": "processing", "progress": 0.4}, Job("j", "processing", 0.4)),
        ({"id": "j", "status": "processing", "progress": 7}, Job("j", "processing", 1.0)),
        (
            {"id": "j", "status": "succeeded", "progress": 1, "result_url": "/v1/jobs/j/result"},
            Job("j", "succeeded", 1.0, "/v1/jobs/j/result"),
        ),
        (
            {"id": "j", "status": "failed", "error": "no face found", "eta": 3},
            Job("j", "failed", 0.0, None, "no face found", {"eta": 3}),
        ),
    ],
)
def test_get_reads_each_status(
    httpserver: HTTPServer, api: HttpGeneration, payload: dict, expected: Job
) -> None:
    httpserver.expect_request("/v1/jobs/j", "GET", headers=AUTH).respond_with_json(payload)
    assert api.get("j") == expected


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_transient(httpserver: HTTPServer, api: HttpGeneration, status: int) -> None:
    httpserver.expect_request("/v1/jobs", "POST").respond_with_data("oops", status=status)
    httpserver.expect_request("/v1/jobs/j", "GET").respond_with_data("oops", status=status)
    with pytest.raises(GenerationError) as caught:
        api.submit("lipsync", {})
    assert not isinstance(caught.value, JobNotFound)
    with pytest.raises(GenerationError) as caught:
        api.get("j")
    assert not isinstance(caught.value, JobNotFound)


@pytest.mark.parametrize("status", [400, 401, 413, 422])
def test_4xx_on_submit_is_a_rejection(
    httpserver: HTTPServer, api: HttpGeneration, status: int
) -> None:
    httpserver.expect_request("/v1/jobs", "POST").respond_with_json(
        {"error": "audio longer than 10 minutes"}, status=status
    )
    with pytest.raises(JobRejected, match="audio longer than 10 minutes"):
        api.submit("lipsync", {"video": "u", "audio": "u"})


def test_429_on_submit_is_transient(httpserver: HTTPServer, api: HttpGeneration) -> None:
    httpserver.expect_request("/v1/jobs", "POST").respond_with_json({"error": "slow"}, status=429)
    with pytest.raises(GenerationError):
        api.submit("lipsync", {})


def test_slow_answer_beyond_the_timeout_is_transient(httpserver: HTTPServer) -> None:
    def slow(_request: Request) -> Response:
        time.sleep(1.5)
        return Response(json.dumps({"id": "j", "status": "queued"}), 200)

    httpserver.expect_request("/v1/jobs/j").respond_with_handler(slow)
    client = HttpGeneration(httpserver.url_for("/").rstrip("/"), KEY, timeout=0.5)
    with pytest.raises(GenerationError, match=r"timed out \(0.5 s\)"):  # httpx gave up first
        client.get("j")


def test_unreachable_service_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with pytest.raises(GenerationError, match="unreachable"):
        HttpGeneration(f"http://127.0.0.1:{port}", KEY, timeout=1).get("j")


@pytest.mark.parametrize("status", [404, 410])
def test_expired_job_is_not_found(httpserver: HTTPServer, api: HttpGeneration, status: int) -> None:
    httpserver.expect_request("/v1/jobs/old").respond_with_json({"error": "gone"}, status=status)
    with pytest.raises(JobNotFound):
        api.get("old")


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        '["a list"]',
        '{"id": "j", "status": "weird"}',
        '{"id": "j", "status": "succeeded"}',
    ],
)
def test_malformed_answers_are_transient(
    httpserver: HTTPServer, api: HttpGeneration, body: str
) -> None:
    httpserver.expect_request("/v1/jobs/j").respond_with_data(body, content_type="application/json")
    httpserver.expect_request("/v1/jobs", "POST").respond_with_data(body, status=201)
    with pytest.raises(GenerationError):
        api.get("j")
    with pytest.raises(GenerationError):
        api.submit("lipsync", {})


def test_fetch_result_streams_the_bytes_with_the_key(
    httpserver: HTTPServer, api: HttpGeneration, tmp_path: Path
) -> None:
    data = bytes(range(256)) * 5000
    httpserver.expect_request("/v1/jobs/j/result", headers=AUTH).respond_with_data(data)
    job = Job("j", SUCCEEDED, 1.0, "/v1/jobs/j/result")
    api.fetch_result(job, tmp_path / "out" / "result.mp4")
    assert (tmp_path / "out" / "result.mp4").read_bytes() == data
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["result.mp4"]


def test_fetch_result_from_another_origin_gets_no_key(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    seen: list[str | None] = []

    def result(request: Request) -> Response:
        seen.append(request.headers.get("Authorization"))
        return Response(b"mp4 bytes", 200)

    httpserver.expect_request("/bucket/r.mp4").respond_with_handler(result)
    client = HttpGeneration(f"http://127.0.0.1:{httpserver.port}", KEY)  # API origin differs
    client.fetch_result(
        Job("j", SUCCEEDED, 1.0, httpserver.url_for("/bucket/r.mp4")), tmp_path / "r"
    )
    assert (tmp_path / "r").read_bytes() == b"mp4 bytes" and seen == [None]


def test_fetch_result_gone_is_not_found(
    httpserver: HTTPServer, api: HttpGeneration, tmp_path: Path
) -> None:
    httpserver.expect_request("/v1/jobs/j/result").respond_with_data("", status=404)
    with pytest.raises(JobNotFound):
        api.fetch_result(Job("j", SUCCEEDED, 1.0, "/v1/jobs/j/result"), tmp_path / "r.mp4")
    assert not (tmp_path / "r.mp4").exists() and list(tmp_path.iterdir()) == []


# --- Simulator ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("inputs")
    return {
        "video2": make_video(d / "v2.mp4", seconds=2).as_uri(),
        "audio3": make_audio(d / "a3.m4a", seconds=3).as_uri(),
        "audio2": make_audio(d / "a2.mp3", seconds=2).as_uri(),
        "image": make_image(d / "face.png").as_uri(),
    }


def wait_final(sim: Simulator, job_id: str, timeout: float = 20) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = sim.get(job_id)
        if job.status in (SUCCEEDED, FAILED):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {sim.get(job_id)}")


@pytest.mark.parametrize(
    ("model", "slots", "seconds"),
    [
        ("lipsync", {"video": "video2", "audio": "audio3"}, 3.0),
        ("talking-photo", {"image": "image", "audio": "audio2"}, 2.0),
        ("faceswap", {"video": "video2", "image": "image"}, 2.0),
    ],
)
def test_simulator_makes_real_media(
    tmp_path: Path, inputs: dict[str, str], model: str, slots: dict[str, str], seconds: float
) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0.2)
    job_id = sim.submit(model, {slot: inputs[name] for slot, name in slots.items()})
    assert sim.get(job_id).status in ("queued", "processing")
    job = wait_final(sim, job_id)
    assert job.status == SUCCEEDED, job.error
    assert job.progress == 1.0 and job.result_url and job.result_url.startswith("file://")
    sim.fetch_result(job, tmp_path / "result.mp4")
    info = probe(tmp_path / "result.mp4")
    assert (info.kind, info.container) == ("video", "mp4")
    assert info.duration_s == pytest.approx(seconds, abs=0.3)


def test_simulator_downloads_http_inputs(
    httpserver: HTTPServer, tmp_path: Path, inputs: dict[str, str]
) -> None:
    # With S3 storage the app hands out presigned http(s) URLs; the simulator fetches them.
    video = Path(inputs["video2"].removeprefix("file://")).read_bytes()
    httpserver.expect_request("/presigned/v.mp4").respond_with_data(video)
    sim = Simulator(tmp_path / "sim", delay_s=0.05)
    slots = {"video": httpserver.url_for("/presigned/v.mp4"), "audio": inputs["audio2"]}
    job = wait_final(sim, sim.submit("lipsync", slots))
    assert job.status == SUCCEEDED, job.error
    assert list((tmp_path / "sim" / "tmp").iterdir()) == []  # downloads cleaned up


def test_simulator_reports_progress_while_processing(
    tmp_path: Path, inputs: dict[str, str]
) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0.8)
    job_id = sim.submit("talking-photo", {"image": inputs["image"], "audio": inputs["audio2"]})
    deadline = time.monotonic() + 5
    while (job := sim.get(job_id)).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    job = sim.get(job_id)
    assert job.status == "processing" and 0 < job.progress < 1
    # Another process (another instance on the same folder) sees the same job.
    assert Simulator(tmp_path / "sim").get(job_id).status in ("processing", SUCCEEDED)
    assert wait_final(sim, job_id).status == SUCCEEDED


def test_simulator_failure_rate(tmp_path: Path, inputs: dict[str, str]) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0.05, failure_rate=1)
    job = wait_final(
        sim, sim.submit("lipsync", {"video": inputs["video2"], "audio": inputs["audio3"]})
    )
    assert job.status == FAILED and "simulated failure" in (job.error or "")
    assert job.result_url is None


def test_simulator_fails_on_bad_media(tmp_path: Path, inputs: dict[str, str]) -> None:
    bogus = tmp_path / "bogus.m4a"
    bogus.write_text("not audio")
    sim = Simulator(tmp_path / "sim", delay_s=0.05)
    job = wait_final(
        sim, sim.submit("lipsync", {"video": inputs["video2"], "audio": bogus.as_uri()})
    )
    assert job.status == FAILED and job.error


def test_simulator_forgets_expired_jobs(tmp_path: Path, inputs: dict[str, str]) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0.05, expiry_s=0.3)
    slots = {"image": inputs["image"], "audio": inputs["audio2"]}
    job = wait_final(sim, sim.submit("talking-photo", slots))
    assert job.status == SUCCEEDED
    result = Path(job.result_url.removeprefix("file://"))
    assert result.is_file()
    time.sleep(0.4)
    with pytest.raises(JobNotFound):
        sim.get(job.id)
    with pytest.raises(JobNotFound):
        sim.fetch_result(job, tmp_path / "late.mp4")
    assert not result.exists()


def test_simulator_sweeps_expired_jobs_on_submit(tmp_path: Path, inputs: dict[str, str]) -> None:
    sim = Simulator(tmp_path / "sim", delay_s=0.05, expiry_s=0.2)
    slots = {"image": inputs["image"], "audio": inputs["audio2"]}
    first = wait_final(sim, sim.submit("talking-photo", slots))
    time.sleep(0.3)
    second = sim.submit("talking-photo", slots)
    remaining = {p.stem for p in (tmp_path / "sim" / "jobs").glob("*.json")}
    assert first.id not in remaining and second in remaining
    wait_final(sim, second)


@pytest.mark.parametrize(
    ("model", "slots"),
    [
        ("deepfake-9000", {"video": "video2"}),
        ("lipsync", {"video": "video2"}),
        ("lipsync", {"video": "video2", "audio": "audio3", "image": "image"}),
        ("faceswap", {"video": "video2", "image": "missing"}),
        ("faceswap", {"video": "video2", "image": "ftp"}),
    ],
)
def test_simulator_rejects_bad_jobs(
    tmp_path: Path, inputs: dict[str, str], model: str, slots: dict[str, str]
) -> None:
    urls = {**inputs, "missing": (tmp_path / "nope.png").as_uri(), "ftp": "ftp://x/y.png"}
    with pytest.raises(JobRejected):
        Simulator(tmp_path / "sim").submit(model, {slot: urls[n] for slot, n in slots.items()})


@pytest.mark.parametrize("job_id", ["sim_doesnotexist", "../../etc/passwd", ""])
def test_simulator_unknown_job(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(JobNotFound):
        Simulator(tmp_path / "sim").get(job_id)


# --- the factory --------------------------------------------------------------------------------


def test_get_generation_picks_by_settings_and_caches(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(gen, "_providers", {})
    monkeypatch.delenv("GENERATION_API_URL", raising=False)
    monkeypatch.setenv("GENERATION_SIM_DIR", str(tmp_path / "sim"))
    monkeypatch.setenv("GENERATION_SIM_DELAY_SECONDS", "0.5")
    monkeypatch.setenv("GENERATION_SIM_FAILURE_RATE", "0.25")
    monkeypatch.setenv("GENERATION_SIM_EXPIRY_SECONDS", "60")
    reset_settings()
    try:
        sim = gen.get_generation()
        assert isinstance(sim, Simulator) and sim.name == "simulator"
        assert (sim.workdir, sim.delay_s, sim.failure_rate, sim.expiry_s) == (
            tmp_path / "sim",
            0.5,
            0.25,
            60,
        )
        assert gen.get_generation() is sim
        monkeypatch.setenv("GENERATION_SIM_DELAY_SECONDS", "1")
        reset_settings()
        assert gen.get_generation() is not sim
        monkeypatch.setenv("GENERATION_API_URL", "https://gen.example/")
        monkeypatch.setenv("GENERATION_API_KEY", "k")
        reset_settings()
        api = gen.get_generation()
        assert isinstance(api, HttpGeneration) and api.name == "api"
        assert api.base_url == "https://gen.example"
        assert gen.get_generation() is api
    finally:
        monkeypatch.undo()
        reset_settings()


def test_simulator_submit_is_idempotent_by_client_ref(tmp_path) -> None:
    from vgen_app.adapters.simulator import Simulator

    sim = Simulator(tmp_path / "sim", delay_s=0)
    video = make_video(tmp_path / "v.mp4", seconds=1)
    audio = make_audio(tmp_path / "a.m4a", seconds=1)
    inputs = {"video": video.as_uri(), "audio": audio.as_uri()}
    first = sim.submit("lipsync", inputs, {"client_ref": "run-1"})
    assert sim.submit("lipsync", inputs, {"client_ref": "run-1"}) == first
    assert sim.submit("lipsync", inputs, {"client_ref": "run-2"}) != first
