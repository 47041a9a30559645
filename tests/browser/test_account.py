"""Issue M in a real Chromium: the account page — password change (the other device is signed
out; old password refused, new one works), e-mail change end to end, sessions with a second
device and revoke, the data export downloaded and opened, account deletion."""

from __future__ import annotations

import json
import re
import zipfile

import pytest
from journey_helpers import (
    activate,
    create_task,
    login_ok,
    new_member,
    path_is,
    signup,
    submit_login,
    unique_email,
    upload_lipsync_inputs,
    wait_for_mails,
    wait_hydrated,
)
from playwright.sync_api import Page, expect

from tests.fakes.media_samples import make_audio, make_video

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new secret 7"


def _open_account(page: Page) -> None:
    page.goto("/account")
    wait_hydrated(page, "#password-submit")
    expect(page.locator("#sessions")).to_be_visible()


def test_password_change_signs_out_the_other_device(app_server, new_context, shots):
    page = new_context().new_page()
    email = new_member(page, app_server, PASSWORD)
    other = new_context().new_page()
    login_ok(other, app_server.url, email, PASSWORD)

    page.get_by_role("link", name="Account").first.click()
    expect(page).to_have_url(path_is(app_server.url, "/account"))
    wait_hydrated(page, "#password-submit")
    expect(page.locator("#account-email")).to_have_text(email)
    expect(page.locator(".session-row")).to_have_count(2)
    expect(page.locator("#footer").get_by_role("link", name="Privacy")).to_be_visible()
    shots(page, "account")

    page.fill("#current_password", "not my password")
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#repeat_password", NEW_PASSWORD)
    page.click("#password-submit")
    expect(page.locator("#password-error")).to_contain_text("not your current password")

    page.fill("#current_password", PASSWORD)
    page.fill("#new_password", NEW_PASSWORD)
    page.fill("#repeat_password", NEW_PASSWORD)
    page.click("#password-submit")
    expect(page.get_by_text("Your password is changed.")).to_be_visible()
    expect(page.locator(".session-row")).to_have_count(1)
    notice = wait_for_mails(app_server.outbox, email, "password_changed", 1)[-1]
    assert "signed out" in notice.text

    # The other device: its next action finds the session gone.
    other.goto("/tokens")
    expect(other).to_have_url(re.compile(r"/login\?next="))
    submit_login(other, email, PASSWORD)
    expect(other.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    login_ok(other, app_server.url, email, NEW_PASSWORD)


def test_change_email_end_to_end(app_server, new_context):
    page = new_context().new_page()
    email = new_member(page, app_server, PASSWORD)
    new_email = unique_email()
    _open_account(page)
    page.fill("#new_email", new_email)
    page.fill("#email_password", PASSWORD)
    page.click("#email-submit")
    expect(page.get_by_text(f"We sent a link to {new_email}")).to_be_visible()
    expect(page.locator("#account-email")).to_have_text(email)  # not before the link
    link = wait_for_mails(app_server.outbox, new_email, "email_change", 1)[-1].link(
        "/account/email"
    )
    page.goto(link)
    expect(page.locator("#email-outcome")).to_contain_text(f"now {new_email}")
    told = wait_for_mails(app_server.outbox, email, "email_changed", 1)[-1]
    assert new_email in told.text
    page.goto(link)  # once only
    expect(page.locator("#email-outcome")).to_contain_text("not valid any more")
    _open_account(page)
    expect(page.locator("#account-email")).to_have_text(new_email)
    expect(page.locator("#header-email")).to_have_text(new_email)

    other = new_context().new_page()
    submit_login(other, email, PASSWORD)
    expect(other.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    login_ok(other, app_server.url, new_email, PASSWORD)


def test_sessions_list_a_second_device_and_revoke_it(app_server, new_context, shots):
    page = new_context().new_page()
    email = new_member(page, app_server, PASSWORD)
    phone = new_context(
        user_agent=(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
        )
    ).new_page()
    login_ok(phone, app_server.url, email, PASSWORD)
    _open_account(page)
    rows = page.locator(".session-row")
    expect(rows).to_have_count(2)
    current = page.locator('.session-row[data-current="true"]')
    expect(current).to_contain_text("This device")
    expect(current).to_contain_text(re.compile(r"Chrom\w* on Linux"))
    iphone = page.locator('.session-row[data-current="false"]')
    expect(iphone).to_contain_text("Mobile Safari on iOS")
    expect(iphone).to_contain_text("127.0.0.1")
    shots(page, "sessions")
    iphone.locator(".session-revoke").click()
    expect(page.get_by_text("That device is signed out.")).to_be_visible()
    expect(rows).to_have_count(1)
    phone.goto("/")
    expect(phone).to_have_url(re.compile(r"/login\?next="))
    # Sign out every other device at once.
    login_ok(phone, app_server.url, email, PASSWORD)
    _open_account(page)
    expect(rows).to_have_count(2)
    page.click("#revoke-others")
    expect(page.get_by_text("1 other device signed out.")).to_be_visible()
    phone.goto("/tokens")
    expect(phone).to_have_url(re.compile(r"/login\?next="))
    page.goto("/tokens")
    expect(page.locator("#header-email")).to_have_text(email)  # this one stays


def test_export_download_and_delete_the_account(app_server, new_context, shots, tmp_path):
    files = {
        "video": make_video(tmp_path / "speaker.mp4", seconds=2, size="320x240"),
        "audio": make_audio(tmp_path / "voice.m4a", seconds=2),
    }
    page = new_context().new_page()
    email = new_member(page, app_server, PASSWORD)
    task_path = create_task(page, "Export me")
    upload_lipsync_inputs(page, files["video"], files["audio"])
    other = new_context().new_page()
    login_ok(other, app_server.url, email, PASSWORD)

    # Notifications: the switch is kept.
    _open_account(page)
    switch = page.locator("#run-mails")
    expect(switch).to_have_attribute("data-state", "checked")
    switch.click()
    expect(switch).to_have_attribute("data-state", "unchecked")
    _open_account(page)
    expect(page.locator("#run-mails")).to_have_attribute("data-state", "unchecked")

    # Export: one ZIP with the account, the ledger, the tasks and the uploaded files.
    with page.expect_download() as info:
        page.click("#export")
    download = info.value
    assert re.fullmatch(r"vgen-export-\d{4}-\d{2}-\d{2}\.zip", download.suggested_filename)
    saved = tmp_path / "export.zip"
    download.save_as(saved)
    with zipfile.ZipFile(saved) as zf:
        names = zf.namelist()
        assert {"account.json", "ledger.csv", "tasks.json"} <= set(names)
        assert json.loads(zf.read("account.json"))["email"] == email
        tasks = json.loads(zf.read("tasks.json"))
        assert "Export me" in json.dumps(tasks)
        stored = {n: zf.read(n) for n in names if n.startswith("files/")}
    contents = set(stored.values())
    assert files["video"].read_bytes() in contents and files["audio"].read_bytes() in contents

    # Delete: the wrong password is refused; the right one removes everything.
    page.click("#delete-account")
    page.fill("#delete_password", "not my password")
    page.click("#delete-account-confirm")
    expect(page.locator("#delete-error")).to_be_visible()
    page.fill("#delete_password", PASSWORD)
    shots(page, "delete-account")
    page.click("#delete-account-confirm")
    expect(page).to_have_url(re.compile(r"/login/?\?deleted=1"))
    expect(page.get_by_text("Your account is deleted")).to_be_visible()
    task_id = task_path.rsplit("/", 1)[-1]
    left = [p for p in (app_server.workdir / "storage").rglob("*") if task_id in p.as_posix()]
    assert [p for p in left if p.is_file()] == []
    other.goto("/tokens")  # the other device is signed out too
    expect(other).to_have_url(re.compile(r"/login\?next="))
    submit_login(page, email, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    # The address is free again: a new account.
    signup(page, email, PASSWORD)
    activate(page, app_server.outbox, email)
    login_ok(page, app_server.url, email, PASSWORD)
    expect(page.locator("#tasks-empty")).to_be_visible()
    expect(page.locator("#header-balance")).to_have_text("0 tokens")
