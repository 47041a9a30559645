"""The mail adapter: the outbox folder (default) and Resend (real client, local fake server)."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from vgen_app.adapters.mail import OutboxMailer, ResendMailer, make_mailer, send_all
from vgen_app.config import get_settings, reset_settings
from vgen_app.services import emails


def read_eml(path: Path) -> email.message.EmailMessage:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.default)


def test_outbox_writes_readable_eml_with_text_and_html(tmp_path: Path) -> None:
    mailer = OutboxMailer(tmp_path / "outbox", "vgen <no-reply@vgen.local>")
    name = mailer.send(emails.activation_mail("ann@example.com", "TOKEN123"))
    files = list((tmp_path / "outbox").glob("*.eml"))
    assert [f.name for f in files] == [name]
    assert not list((tmp_path / "outbox").glob(".*.tmp"))
    msg = read_eml(files[0])
    assert msg["To"] == "ann@example.com" and msg["Subject"] == "Activate your vgen account"
    assert msg["X-Vgen-Kind"] == "activation"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "http://localhost:3000/verify?token=TOKEN123" in text
    assert 'href="http://localhost:3000/verify?token=TOKEN123"' in html


def test_links_are_absolute_from_app_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "https://app.vgen.com/")
    reset_settings()
    mail = emails.reset_mail("ann@example.com", "abc")
    assert "https://app.vgen.com/reset?token=abc" in mail.text
    assert "https://app.vgen.com/reset?token=abc" in mail.html


def test_default_mailer_is_the_outbox_and_resend_when_key_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(make_mailer(get_settings()), OutboxMailer)
    monkeypatch.setenv("RESEND_API_KEY", "re_test")
    reset_settings()
    assert isinstance(make_mailer(get_settings()), ResendMailer)


def test_resend_sends_through_the_real_client(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/emails", method="POST").respond_with_json({"id": "email-42"})
    mailer = ResendMailer(
        "re_test_key", "vgen <no-reply@vgen.com>", httpserver.url_for("").rstrip("/")
    )
    assert mailer.send(emails.reset_mail("ann@example.com", "TKN")) == "email-42"
    (request, _response) = httpserver.log[0]
    assert request.headers["Authorization"] == "Bearer re_test_key"
    body = json.loads(request.data)
    assert body["to"] == ["ann@example.com"] and body["from"] == "vgen <no-reply@vgen.com>"
    assert body["subject"] == "Reset your vgen password"
    assert "/reset?token=TKN" in body["text"] and "/reset?token=TKN" in body["html"]


def test_provider_failure_is_logged_not_raised(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/emails", method="POST").respond_with_json(
        {"statusCode": 500, "name": "internal_server_error", "message": "boom"}, status=500
    )
    mailer = ResendMailer(
        "re_test_key", "vgen <no-reply@vgen.com>", httpserver.url_for("").rstrip("/")
    )
    sent = send_all([emails.activation_mail("ann@example.com", "T")], mailer)
    assert sent == 0
    assert "sending activation mail failed" in caplog.text
