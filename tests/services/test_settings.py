"""Settings are cached once per process; a reset (tests change the environment) always wins."""

from __future__ import annotations

import threading

import pytest

from vgen_app import config


def test_a_read_begun_before_a_reset_is_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_URL", "http://old.example")
    config.reset_settings()
    entered, release = threading.Event(), threading.Event()
    real = config.Settings

    class SlowFirstRead(real):  # type: ignore[misc, valid-type]
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if not entered.is_set():
                entered.set()
                release.wait(10)

    monkeypatch.setattr(config, "Settings", SlowFirstRead)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.append(config.get_settings().app_url))
    reader.start()
    assert entered.wait(10)
    monkeypatch.setenv("APP_URL", "http://new.example")  # a test changes the environment...
    config.reset_settings()  # ...and resets, while the old read is still under way
    release.set()
    reader.join(10)

    assert seen == ["http://old.example"]  # that reader saw the old value, as it began before
    assert config.get_settings().app_url == "http://new.example"  # but did not cache it
    config.reset_settings()
