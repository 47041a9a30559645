"""Tasks in a real Chromium: create a lipsync task, upload with progress, run, live status,
download, regenerate; someone else sees nothing."""

from __future__ import annotations

import re

import pytest
from journey_helpers import activate, buy_10k, login_ok, signup, unique_email, wait_hydrated
from playwright.sync_api import expect

from tests.fakes.media_samples import make_audio, make_video
from vgen_app.adapters import media

pytestmark = pytest.mark.browser


def _upload(page, slot: str, path) -> None:
    page.locator(f"#upload-{slot} input[type=file]").set_input_files(str(path))


def test_lipsync_task_run_download_regenerate(app_server, new_context, shots, tmp_path):
    video = make_video(tmp_path / "speaker.mp4", seconds=3, size="320x240")
    audio = make_audio(tmp_path / "voice.m4a", seconds=2)
    email, password = unique_email(), "correct horse battery"
    context = new_context()
    page = context.new_page()
    signup(page, email, password)
    activate(page, app_server.outbox, email)
    login_ok(page, app_server.url, email, password)
    expect(page.locator("#tasks-empty")).to_be_visible()
    shots(page, "dashboard-empty")
    buy_10k(page)

    page.goto("/tasks/new")
    wait_hydrated(page, "#create-task")
    page.fill("#name", "Spanish promo")
    shots(page, "new-task")
    page.click("#create-task")
    expect(page.locator("#task-name")).to_have_text("Spanish promo")
    task_url = page.url
    assert re.search(r"/tasks/(?!new)[A-Za-z0-9_-]+/?$", task_url), task_url
    expect(page.locator("#run-button")).to_be_disabled()

    # Slow the network down so the upload's progress bar is seen.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 60_000},
    )
    wait_hydrated(page, "#upload-video")
    _upload(page, "video", video)
    expect(page.locator("#slot-video-progress")).to_be_visible()
    shots(page, "uploading")
    expect(page.locator("#slot-video-file")).to_contain_text("speaker.mp4", timeout=60_000)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    _upload(page, "audio", audio)
    expect(page.locator("#slot-audio-file")).to_contain_text("voice.m4a")
    expect(page.locator("#slot-audio-file")).to_contain_text("2.0 s")
    expect(page.locator("#run-price")).to_have_text("500 tokens")
    shots(page, "ready")

    page.click("#run-button")
    run1 = page.locator("#run-1")
    expect(run1).to_be_visible()
    expect(page.locator("#header-balance")).to_have_text("9,500 tokens")
    expect(run1).to_have_attribute("data-status", "succeeded", timeout=60_000)
    shots(page, "succeeded")

    download_url = page.locator("#download-1").get_attribute("data-href")
    assert download_url and "/api/runs/" in download_url
    with page.expect_download() as info:
        page.click("#download-1")
    download = info.value
    assert re.fullmatch(r"vgen-spanish-promo-attempt-1\.mp4", download.suggested_filename)
    saved = tmp_path / "result.mp4"
    download.save_as(saved)
    result = media.probe(saved)
    assert result.kind == "video" and abs(result.duration_s - 2.0) < 0.3

    expect(page.locator("#run-button")).to_have_text(re.compile("Regenerate"))
    page.click("#run-button")
    run2 = page.locator("#run-2")
    expect(run2).to_be_visible()
    expect(run2).to_have_attribute("data-status", "succeeded", timeout=60_000)
    expect(run1).to_have_attribute("data-status", "succeeded")  # the earlier result stays
    expect(page.locator("#header-balance")).to_have_text("9,000 tokens")
    shots(page, "regenerated")

    page.goto("/")
    expect(page.locator("#tasks-table")).to_contain_text("Spanish promo")
    expect(page.locator("#tasks-table")).to_contain_text("succeeded")
    shots(page, "dashboard")

    # Someone else: the task page and the download are not there for them.
    other = new_context().new_page()
    mallory = unique_email()
    signup(other, mallory, password)
    activate(other, app_server.outbox, mallory)
    login_ok(other, app_server.url, mallory, password)
    other.goto(task_url)
    expect(other.locator("#task-missing")).to_be_visible()
    response = other.request.get(download_url)
    assert response.status == 404
