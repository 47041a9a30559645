"""Shared by the tests/scenarios/test_abuse_*.py files (Issue H): constants, the way the tests call
a UI handler (as a socket would), and fixtures. No tests here. A fixture is found by its name in
the test module, so a module that uses one binds it: `client = abuse_helpers.client`."""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import bcrypt
import pytest
import stripe
import wrapt
from starlette.testclient import TestClient

from tests.helpers import login_session, make_user, ui_state
from vgen_app.adapters import mail
from vgen_app.adapters import storage as storage_mod
from vgen_app.config import get_settings, reset_settings
from vgen_app.db import session_scope
from vgen_app.models import Run, TaskInput
from vgen_app.services import accounts, tasks

ORIGIN = "http://localhost:3000"
PW = "correct horse"


async def _collect(result: Any) -> list[Any]:
    if hasattr(result, "__aiter__"):
        return [e async for e in result if e is not None]
    if inspect.isawaitable(result):
        result = await result
    if result is None:
        return []
    return [e for e in result if e is not None] if isinstance(result, list | tuple) else [result]


def _js(events: list[Any]) -> str:
    """The events as text (function addresses dropped: equal events compare equal)."""
    return re.sub(r" at 0x[0-9a-f]+", "", " ".join(str(e) for e in events))


class _BackgroundProxy(wrapt.ObjectProxy):
    """What a background handler gets as `self`: `async with self` (here: no lock to take)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _call(state: Any, name: str, *args: Any) -> list[Any]:
    owner = next(c for c in type(state).__mro__ if name in getattr(c, "event_handlers", {}))
    handler = owner.event_handlers[name]
    target = _BackgroundProxy(state) if handler.is_background else state
    return await _collect(handler.fn(target, *args))


def _run(state: Any, name: str, *args: Any) -> list[Any]:
    """One handler call on a fresh event loop; mails it sent in the background are sent."""

    async def go() -> list[Any]:
        events = await _call(state, name, *args)
        await mail.drain()
        return events

    return asyncio.run(go())


_SKIP_VARS = ("router", "rx_router", "_reflex", "is_hydrated")


def _snapshot(state: Any) -> dict[str, str]:
    """Every field (backend ones too) and computed var of the state, as text."""
    cls = type(state)
    names = set(cls.__fields__) | set(cls.vars)
    snap = {}
    for name in sorted(n for n in names if not n.startswith(_SKIP_VARS)):
        try:
            snap[name] = repr(getattr(state, name))
        except Exception as exc:  # noqa: BLE001 - a var that cannot be read holds no data either
            snap[name] = f"<{type(exc).__name__}>"
    return snap


def _login(email: str, password: str, ip: str) -> tuple[Any, list[Any]]:
    from vgen_app.ui.auth import LoginState

    state = ui_state(LoginState, "/login?next=/tokens", ip=ip)
    events = _run(state, "submit", {"email": email, "password": password})
    return state, events


def _ticket(email: str = "ann@example.com") -> str:
    with session_scope() as db:
        make_user(db, email)
        result = accounts.login(db, email, PW)
    assert result.ticket
    return result.ticket


@pytest.fixture
def bcrypt_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    """Every bcrypt check and hash, with the cost it ran at (b"$2b$04$" ...)."""
    calls: list[tuple[str, bytes]] = []
    real_check, real_hash = bcrypt.checkpw, bcrypt.hashpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(("check", hashed[:7]))
        return real_check(password, hashed)

    def hashpw(password: bytes, salt: bytes) -> bytes:
        calls.append(("hash", salt[:7]))
        return real_hash(password, salt)

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    monkeypatch.setattr(bcrypt, "hashpw", hashpw)
    return calls


ADMIN_TOKEN = "abuse-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WEBHOOK_SECRET = "whsec_abuse_tests"
MiB = 1024 * 1024
CHUNK = 64 * 1024


def sign(payload: bytes) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), WEBHOOK_SECRET)


@pytest.fixture
def secrets_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
    reset_settings()


SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
BOTH = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def storage_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Storage and the upload spool inside a `jail/` folder of tmp_path, so that anything written
    beside them (a `../` that got through) is seen by `files_under(tmp_path)`."""
    root = tmp_path / "jail" / "storage"
    monkeypatch.setenv("STORAGE_URL", f"file://{root}")
    monkeypatch.setenv("UPLOAD_TMP_DIR", str(tmp_path / "jail" / "spool"))
    reset_settings()
    storage_mod._cache.clear()
    yield root
    storage_mod._cache.clear()


@pytest.fixture
def client(
    asgi_app: Any, database_url: str, secrets_set: None, storage_root: Path
) -> Iterator[TestClient]:
    """The whole app (Reflex + the /api sub-app), lifespan running; a server error is a 500
    response here (as a client would see it), not an exception. Every setting is in the
    environment before the lifespan starts: its worker threads read the settings, and one that
    reads them while a fixture changes the environment can cache a stale copy (the storage root
    of the repo's var/ instead of this test's)."""
    with TestClient(asgi_app, base_url=ORIGIN, raise_server_exceptions=False) as c:
        settings = get_settings()
        assert settings.storage_url == f"file://{storage_root}", settings.storage_url
        assert settings.admin_token == ADMIN_TOKEN
        yield c


# --- Two users' stored media (the download route, the media route) ---------------------------------


@dataclass
class Downloads:
    run_id: str
    other_run_id: str  # eve's own run
    content: bytes  # every result's bytes
    tokens: dict[str, str]  # ann, eve (sessions)
    ids: dict[str, str]  # user ids
    task_ids: dict[str, str]  # ann, eve: the task of each one's run
    input_ids: dict[str, int]  # ann, eve: the task's audio input
    poster: bytes  # every run's poster (a JPEG frame, as far as its first bytes go)
    audio: bytes  # every input's bytes (.m4a)
    keys: dict[str, list[str]]  # ann, eve: every storage key of the task (result, poster, input)


def _store(root: Path, key: str, content: bytes) -> None:
    src = root.parent / f"{uuid.uuid4().hex}.part"
    src.write_bytes(content)
    storage_mod.get_storage().put_file(key, src)
    src.unlink()


@pytest.fixture
def downloads(database_url: str, storage_root: Path) -> Downloads:
    """Two users, each with a task holding an audio input and a succeeded run whose result and
    poster frame are in storage."""
    content = b"\x00\x00\x00\x18ftypmp42" + os.urandom(50_000)
    poster = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(3_000) + b"\xff\xd9"
    audio = b"\x00\x00\x00\x1cftypM4A " + os.urandom(20_000)
    storage_root.parent.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    runs_by: dict[str, str] = {}
    task_ids: dict[str, str] = {}
    input_ids: dict[str, int] = {}
    keys: dict[str, list[str]] = {}
    with session_scope() as db:
        for name in ("ann", "eve"):
            uid = make_user(db, f"{name}@example.com")
            made[name] = uid
            task = tasks.create_task(db, uid, "lipsync", f"{name}'s clip")
            result_key = f"results/{task.id}/{uuid.uuid4().hex}.mp4"
            run = Run(
                task_id=task.id,
                owner_id=uid,
                attempt=1,
                status="succeeded",
                progress=1.0,
                price=500,
                model="lipsync",
                inputs={},
                result_key=result_key,
                result_bytes=len(content),
                poster_key=result_key.removesuffix(".mp4") + ".jpg",
            )
            audio_key = tasks.storage_key(task.id, "audio", "voice.m4a")
            row = TaskInput(
                task_id=task.id,
                slot="audio",
                storage_key=audio_key,
                filename="voice.m4a",
                size_bytes=len(audio),
                media={},
            )
            db.add(run)
            db.add(row)
            db.commit()
            _store(storage_root, result_key, content)
            _store(storage_root, run.poster_key, poster)
            _store(storage_root, audio_key, audio)
            runs_by[name] = run.id
            task_ids[name] = task.id
            assert row.id is not None
            input_ids[name] = row.id
            keys[name] = [result_key, run.poster_key, audio_key]
        tokens = {name: login_session(db, f"{name}@example.com") for name in made}
    return Downloads(
        runs_by["ann"],
        runs_by["eve"],
        content,
        tokens,
        made,
        task_ids,
        input_ids,
        poster,
        audio,
        keys,
    )


JUNK_RUN_IDS = [
    "nonexistent",
    "%00",
    "abc%00def",
    "a" * 33,
    "a" * 5000,
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "%E2%80%AE",
    "%27%20OR%201%3D1%20--",
    "%F0%9F%8E%AC",
]
