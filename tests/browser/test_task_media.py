"""Issue L in a real Chromium: inputs previewed and results played in the page (Range requests
answered 206), rename, delete (storage emptied, routes 404), cancel + refund, a failed run's
plain reason and e-mail, the run progress bar, and uploads that cannot surprise (too big refused
before sending, cancel, leaving asks first, no drop while a run is in flight)."""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest
from conftest import _free_port, _kill_group, app_env, start_app
from journey_helpers import (
    buy_10k,
    create_task,
    new_member,
    path_is,
    upload_lipsync_inputs,
    wait_for_mails,
    wait_hydrated,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.fakes.media_samples import make_audio, make_image, make_video
from vgen_app.services.runs import GENERIC_FAILURE

pytestmark = pytest.mark.browser

# The element has decoded a frame (HAVE_CURRENT_DATA) — what "it plays" means here.
_PLAYABLE = (
    "(sel) => { const el = document.querySelector(sel); return !!el && el.readyState >= 2; }"
)


def _play(page: Page, selector: str) -> None:
    """Start the element muted (no autoplay prompt) and wait until it has a frame to show."""
    page.wait_for_selector(selector)
    page.evaluate(
        "(sel) => { const el = document.querySelector(sel); el.muted = true; el.play(); }",
        selector,
    )
    page.wait_for_function(_PLAYABLE, arg=selector, timeout=20_000)


def _bar_reading(run) -> dict | None:
    """The run's progress bar at rest: its label, aria-valuenow and how much of it is filled (in
    %). None if the run ended first, or the value kept moving while it was measured."""
    bar = run.get_by_role("progressbar")
    if bar.count() == 0:
        return None
    with contextlib.suppress(PlaywrightError):  # the bar went away: the run ended
        return bar.evaluate(
            """async (el) => {
                for (let i = 0; i < 5; i++) {
                    const ind = el.firstElementChild;
                    const before = el.getAttribute("aria-valuenow");
                    await Promise.all(ind.getAnimations().map((a) => a.finished));
                    const box = el.getBoundingClientRect();
                    const r = ind.getBoundingClientRect();
                    const label = el.parentElement.innerText;
                    if (before === el.getAttribute("aria-valuenow") && !ind.getAnimations().length) {
                        return {label, now: Number(before),
                                filled: Math.round((100 * (r.right - box.left)) / box.width)};
                    }
                }
                return null;
            }""",
            timeout=5_000,
        )
    return None


def _media(tmp_path: Path) -> dict[str, Path]:
    return {
        "video": make_video(tmp_path / "speaker.mp4", seconds=3, size="320x240"),
        "audio": make_audio(tmp_path / "voice.m4a", seconds=2),
        "image": make_image(tmp_path / "face.png"),
    }


def _storage_files(app, task_path: str) -> list[Path]:
    task_id = task_path.rsplit("/", 1)[-1]
    root = app.workdir / "storage"
    return [p for p in root.rglob("*") if p.is_file() and task_id in p.as_posix()]


def test_inputs_preview_results_play_and_seek(app_server, new_context, shots, tmp_path):
    files = _media(tmp_path)
    context = new_context()
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    media_answers: list[tuple[str, int, str]] = []
    page.on(
        "response",
        lambda r: (
            "/api/media/" in r.url
            and media_answers.append((r.url, r.status, r.headers.get("content-range", "")))
        ),
    )
    email = new_member(page, app_server)
    buy_10k(page)
    task_path = create_task(page, "Media check")
    upload_lipsync_inputs(page, files["video"], files["audio"])
    _play(page, "#preview-video")
    _play(page, "#preview-audio")

    page.click("#run-button")
    run1 = page.locator("#run-1")
    # While it runs: the bar and its label say the same, and no file can be dropped.
    expect(run1.get_by_role("progressbar")).to_be_visible()
    expect(page.locator("#upload-video-button")).to_be_disabled()
    expect(page.locator("#upload-audio-button")).to_be_disabled()
    readings = []
    for _ in range(3):
        reading = _bar_reading(run1)
        if reading is None:
            break
        label = int(re.search(r"(\d+)\s*%", reading["label"]).group(1))
        assert reading["now"] == label and abs(reading["filled"] - label) <= 3, reading
        readings.append(reading)
        time.sleep(0.7)
    assert readings, "the run's progress bar was never seen at rest"
    expect(run1).to_have_attribute("data-status", "succeeded", timeout=60_000)
    assert not [m for m in console if "Invalid prop" in m], console

    player = page.locator("#player-1")
    poster = player.get_attribute("poster")
    assert poster and "/api/media/poster/" in poster
    assert page.request.get(poster).headers["content-type"] == "image/jpeg"
    _play(page, "#player-1")
    duration = page.eval_on_selector("#player-1", "el => el.duration")
    assert 1.5 < duration < 2.5
    page.eval_on_selector("#player-1", "el => { el.pause(); el.currentTime = el.duration * 0.8; }")
    page.wait_for_function(
        "(sel) => { const el = document.querySelector(sel); return !el.seeking && el.readyState >= 2; }",
        arg="#player-1",
    )
    # A seek within the page's own session: the browser asks for a byte range, answered 206.
    src = player.get_attribute("src")
    part = page.evaluate(
        """async (src) => {
            const r = await fetch(src, {headers: {Range: 'bytes=1000-1999'}});
            return {status: r.status, range: r.headers.get('content-range'),
                    size: (await r.arrayBuffer()).byteLength};
        }""",
        src,
    )
    assert part["status"] == 206 and part["size"] == 1000, part
    assert re.fullmatch(r"bytes 1000-1999/\d+", part["range"])
    played = [a for a in media_answers if "/api/media/result/" in a[0]]
    assert played and all(status == 206 and rng for _, status, rng in played), played
    shots(page, "result-player")

    # My tasks shows the newest result's frame beside the task's name.
    page.goto("/")
    thumb = page.get_by_role("img", name="Media check — latest result")
    expect(thumb).to_have_attribute("src", poster)
    page.wait_for_function("(el) => el.complete && el.naturalWidth > 0", arg=thumb.element_handle())

    # An image input, previewed; a picture too small for any model is refused at once.
    photo_path = create_task(page, "Face check", "faceswap")
    page.locator("#upload-image input[type=file]").set_input_files(str(files["image"]))
    expect(page.locator("#slot-image-file")).to_contain_text("face.png")
    page.wait_for_function(
        "() => { const el = document.querySelector('#preview-image'); return el && el.complete && el.naturalWidth > 0; }"
    )
    tiny = make_image(tmp_path / "dot.png", size="1x1")
    page.locator("#upload-image input[type=file]").set_input_files(str(tiny))
    expect(page.locator("#slot-image-error")).to_contain_text("64")
    expect(page.locator("#slot-image-file")).to_contain_text("face.png")  # the earlier one stays
    shots(page, "image-preview")

    # Someone else: none of it.
    urls = [src, poster, page.locator("#preview-image").get_attribute("src")]
    other = new_context().new_page()
    new_member(other, app_server)
    for url in urls:
        assert other.request.get(url).status == 404, url
    other.goto(photo_path)
    expect(other.locator("#task-missing")).to_be_visible()
    assert email and task_path


def test_rename_and_delete_a_task(app_server, new_context, shots, tmp_path):
    files = _media(tmp_path)
    page = new_context().new_page()
    new_member(page, app_server)
    buy_10k(page)
    task_path = create_task(page, "Old name")
    upload_lipsync_inputs(page, files["video"], files["audio"])
    page.click("#run-button")
    # While it runs, Delete says why it cannot.
    page.click("#delete-task")
    expect(page.locator("#delete-busy")).to_contain_text("This task is running")
    expect(page.locator("#delete-confirm")).to_have_count(0)
    page.get_by_role("button", name="Close").click()
    expect(page.locator("#run-1")).to_have_attribute("data-status", "succeeded", timeout=60_000)

    # Rename: the button opens the field, Enter saves; the list and a reload say the new name.
    page.click("#rename-task")
    field = page.locator("#rename-input")
    expect(field).to_be_focused()
    field.fill("Wedding toast")
    expect(page).to_have_title("Old name · vgen")
    field.press("Enter")
    expect(page.locator("#task-name")).to_have_text("Wedding toast")
    expect(page).to_have_title("Wedding toast · vgen")  # the tab says the new name at once
    shots(page, "renamed")
    page.reload()
    expect(page.locator("#task-name")).to_have_text("Wedding toast")
    expect(page).to_have_title("Wedding toast · vgen")
    page.click("#rename-task")
    page.locator("#rename-input").fill("   ")
    page.locator("#rename-input").press("Enter")
    expect(page.locator("#rename-error")).to_be_visible()
    page.reload()
    expect(page.locator("#task-name")).to_have_text("Wedding toast")

    urls = [
        page.locator("#player-1").get_attribute("src"),
        page.locator("#player-1").get_attribute("poster"),
        page.locator("#preview-video").get_attribute("src"),
        page.locator("#preview-audio").get_attribute("src"),
        page.locator("#download-1").get_attribute("data-href"),
    ]
    assert all(page.request.get(u).status == 200 for u in urls)
    assert len(_storage_files(app_server, task_path)) >= 4  # 2 inputs, result, poster
    balance = page.locator("#header-balance").inner_text()

    # Delete, behind its dialog: Cancel keeps it; Delete removes it everywhere.
    page.click("#delete-task")
    dialog = page.get_by_role("alertdialog")
    expect(dialog).to_contain_text("Wedding toast")
    shots(page, "delete-dialog")
    dialog.get_by_role("button", name="Keep it").click()
    expect(dialog).to_have_count(0)
    page.click("#delete-task")
    page.click("#delete-confirm")
    expect(page).to_have_url(path_is(app_server.url, "/"))
    expect(page.get_by_text("Wedding toast")).to_have_count(0)
    expect(page.locator("#header-balance")).to_have_text(balance)  # money is not touched
    assert _storage_files(app_server, task_path) == []
    stranger = new_context().new_page()
    new_member(stranger, app_server)
    for url in urls:
        assert page.request.get(url).status == 404, url
        assert stranger.request.get(url).status == 404, url
    page.goto(task_path)
    expect(page.locator("#task-missing")).to_be_visible()
    page.goto("/tokens")
    expect(page.locator("#history")).to_contain_text("Run of Wedding toast (attempt 1)")


def test_a_failed_run_says_why_in_plain_words_and_mails(app_server, new_context, tmp_path):
    files = _media(tmp_path)
    page = new_context().new_page()
    email = new_member(page, app_server)
    buy_10k(page)
    task_path = create_task(page, "Broken clip")
    upload_lipsync_inputs(page, files["video"], files["audio"])
    # The stored video goes bad after it was checked: the generation's ffmpeg fails on it.
    stored = [p for p in _storage_files(app_server, task_path) if p.suffix == ".mp4"]
    assert len(stored) == 1
    stored[0].write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\xde\xad" * 4000)
    page.click("#run-button")
    run1 = page.locator("#run-1")
    expect(run1).to_have_attribute("data-status", "failed", timeout=60_000)
    expect(run1).to_contain_text(GENERIC_FAILURE)
    expect(run1).not_to_contain_text("ffmpeg")
    expect(run1).to_contain_text("refunded")
    expect(page.locator("#header-balance")).to_have_text("10,000 tokens")
    mail = wait_for_mails(app_server.outbox, email, "run_failed", 1)[-1]
    assert "Broken clip" in mail.subject + mail.text
    assert GENERIC_FAILURE in mail.text and "ffmpeg" not in mail.text


def test_the_run_finished_mail_links_to_the_task(app_server, new_context, tmp_path):
    files = _media(tmp_path)
    page = new_context().new_page()
    email = new_member(page, app_server)
    buy_10k(page)
    task_path = create_task(page, "Mailed clip")
    upload_lipsync_inputs(page, files["video"], files["audio"])
    page.click("#run-button")
    expect(page.locator("#run-1")).to_have_attribute("data-status", "succeeded", timeout=60_000)
    mails = wait_for_mails(app_server.outbox, email, "run_succeeded", 1)
    assert len(mails) == 1 and "Mailed clip" in mails[0].subject + mails[0].text
    assert app_server.url + task_path in mails[0].text
    page.goto(task_path)
    time.sleep(3)  # a few more worker rounds: still one mail for the run
    assert len(wait_for_mails(app_server.outbox, email, "run_succeeded", 1)) == 1


def test_uploads_refuse_too_big_files_cancel_and_ask_before_leaving(
    app_server, new_context, shots, tmp_path
):
    files = _media(tmp_path)
    context = new_context()
    page = context.new_page()
    sent: list[int] = []  # bytes of each upload request
    page.on(
        "request", lambda r: "/_upload" in r.url and sent.append(len(r.post_data_buffer or b""))
    )
    new_member(page, app_server)
    create_task(page, "Uploads", "faceswap")

    # 21 MB for a 20 MB slot: refused in the browser, none of it sent (the drop's event reaches
    # the server with no file).
    big = tmp_path / "huge.png"
    with big.open("wb") as f:
        f.truncate(21 * 1024 * 1024)
    wait_hydrated(page, "#upload-image")
    page.locator("#upload-image input[type=file]").set_input_files(str(big))
    expect(
        page.get_by_text(re.compile(r"Photo of the face: choose one file .*up to 20 MB"))
    ).to_be_visible()
    time.sleep(0.5)
    assert all(size < 10_000 for size in sent), sent
    expect(page.locator("#slot-image-progress")).to_have_count(0)
    shots(page, "too-big-refused")

    # A slow upload: leaving asks first; "Cancel upload" stops it and nothing is kept.
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1, "uploadThroughput": 20_000},
    )
    page.click("#upload-video-button")  # a user gesture: the page may ask before unloading
    page.keyboard.press("Escape")
    page.locator("#upload-video input[type=file]").set_input_files(str(files["video"]))
    expect(page.locator("#slot-video-progress")).to_be_visible()
    asked: list[str] = []

    def stay(dialog) -> None:
        asked.append(dialog.type)
        dialog.dismiss()

    page.once("dialog", stay)
    with contextlib.suppress(PlaywrightError):  # the navigation was refused: the page stays
        page.goto("/tokens", timeout=3_000)
    assert asked == ["beforeunload"]
    assert "/tokens" not in page.url
    page.click("#slot-video-cancel")
    expect(page.locator("#slot-video-progress")).to_have_count(0)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    expect(page.locator("#slot-video-file")).to_have_count(0)
    page.reload()
    expect(page.locator("#task-name")).to_have_text("Uploads")
    expect(page.locator("#slot-video-file")).to_have_count(0)
    # Afterwards, leaving no longer asks.
    page.goto("/tokens")
    expect(page).to_have_url(path_is(app_server.url, "/tokens"))


def test_cancel_a_queued_run_refunds_it_once(browser, tmp_path_factory, tmp_path, shots):
    """Its own app whose worker looks at the queue once an hour: the run stays queued."""
    workdir = tmp_path_factory.mktemp("cancel")
    port = _free_port()
    env = app_env(workdir, port, {"WORKER_POLL_SECONDS": "3600"})
    proc, app = start_app(workdir, port, env)
    context = browser.new_context(base_url=app.url, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(20_000)
    try:
        files = _media(tmp_path)
        page = context.new_page()
        new_member(page, app)
        buy_10k(page)
        create_task(page, "Queued clip")
        upload_lipsync_inputs(page, files["video"], files["audio"])
        page.click("#run-button")
        run1 = page.locator("#run-1")
        expect(run1).to_have_attribute("data-status", "queued")
        expect(page.locator("#header-balance")).to_have_text("9,500 tokens")
        shots(page, "queued")
        page.click("#cancel-1")
        expect(run1).to_have_attribute("data-status", "canceled")
        expect(run1).to_contain_text("refunded")
        expect(page.locator("#header-balance")).to_have_text("10,000 tokens")
        expect(page.locator("#cancel-1")).to_have_count(0)
        expect(page.locator("#upload-video-button")).to_be_enabled()  # idle again
        page.goto("/tokens")
        history = page.locator("#history")
        expect(history).to_contain_text("Refund")
        expect(history).to_contain_text("Queued clip")
        expect(page.locator("#tokens-balance")).to_contain_text("10,000")
    finally:
        context.close()
        _kill_group(proc)
