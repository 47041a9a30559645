"""FastAPI dependencies shared by the routes: who is calling, from the session cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from vgen_app.db import run_db
from vgen_app.services import sessions
from vgen_app.services.cookies import token_from_cookie_header
from vgen_app.services.sessions import SessionUser


def session_token(request: Request) -> str | None:
    return token_from_cookie_header(request.headers.get("cookie"))


async def session_user(request: Request) -> SessionUser | None:
    """The live session's user, checked in the database on every call, or None. The user id
    goes into the request's log line."""
    token = session_token(request)
    user = await run_db(sessions.validate, token) if token else None
    if user is not None:
        request.state.user_id = user.user_id
    return user


async def current_user(request: Request) -> SessionUser:
    """The live session's user; 401 without one."""
    user = await session_user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="Log in to download.")
    return user


CurrentUser = Annotated[SessionUser, Depends(current_user)]
# For routes that answer a visitor without a session like anyone else who may not see the thing.
MaybeUser = Annotated[SessionUser | None, Depends(session_user)]
SessionToken = Annotated[str | None, Depends(session_token)]
