"""Small helpers shared by tests."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlmodel import Session

from vgen_app.services import accounts
from vgen_app.services.emails import Mail

ORIGIN = "http://localhost:3000"
TOKEN_RE = re.compile(r"token=([A-Za-z0-9_\-]+)")


def token_of(mail: Mail) -> str:
    match = TOKEN_RE.search(mail.text)
    assert match, mail.text
    return match.group(1)


def make_user(db: Session, email: str = "ann@example.com", password: str = "correct horse") -> str:
    """A signed-up, activated user; returns its id."""
    result = accounts.signup(db, email, password)
    (mail,) = result.mails
    accounts.activate(db, token_of(mail))
    assert result.user_id
    return result.user_id


def login_session(db: Session, email: str, password: str = "correct horse") -> str:
    result = accounts.login(
        db, email, password, accounts.ClientInfo(ip="10.0.0.1", user_agent="pytest")
    )
    assert result.ticket
    token, _user = accounts.redeem_login_ticket(
        db, result.ticket, accounts.ClientInfo(ip="10.0.0.1")
    )
    return token


def spool(src: Path, name: str | None = None) -> tuple[Path, int]:
    """A copy of `src` where the upload handler would have spooled it."""
    from vgen_app.config import get_settings

    folder = get_settings().upload_tmp_dir
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{name or src.name}.part"
    shutil.copyfile(src, dest)
    return dest, dest.stat().st_size


def ingest(user: str, task_id: str, slot: str, src: Path, filename: str | None = None):
    from vgen_app.services import uploads

    path, size = spool(src)
    return uploads.ingest(user, task_id, slot, filename or src.name, path, size)


def ui_state(cls: type, path: str = "/", cookie: str = "", ip: str = "127.0.0.1") -> Any:
    """A UI state as a tab at `path` would have it (cookie and client IP from its handshake)."""
    from reflex.istate.data import RouterData

    state = cls()
    state.router = RouterData.from_router_data(
        {
            "headers": {"origin": ORIGIN, "cookie": cookie, "user-agent": "Chromium test"},
            "asPath": path,
            "pathname": path.split("?")[0],
            "ip": ip,
            "token": "client-token",
        }
    )
    return state


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement the app's engine runs inside the block (transaction control left out)."""
    from sqlalchemy import event

    from vgen_app.db import get_engine

    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT")):
            seen.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
