"""Passwords and random tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import bcrypt

from vgen_app import cpu
from vgen_app.config import get_settings


def _prehash(password: str) -> bytes:
    # bcrypt reads at most 72 bytes; a SHA-256 pre-hash keeps every character of a long
    # (or multi-byte) password significant instead of truncating or crashing.
    digest = hashlib.sha256(password.encode("utf-8")).digest()
    return base64.b64encode(digest)


T = TypeVar("T")

# bcrypt runs on threads of its own: at most (cores - 1) at once, at a lower CPU priority, so that
# a burst of logins can never take every core from the event loop and the database threads
# (bench/event_roundtrip.py: no-op p95 under 20 logins went from 5.8-14x to about 1.5x its floor).
BCRYPT_NICE = 10
_bcrypt_pool: tuple[int, ThreadPoolExecutor] | None = None
_bcrypt_lock = threading.Lock()


def bcrypt_threads() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def _bcrypt_thread_start() -> None:
    """Every CPU (not the event loop's alone: vgen_app/cpu.py), at a lower priority."""
    cpu.unpin()
    try:  # Linux: the priority of this thread only
        os.setpriority(os.PRIO_PROCESS, 0, BCRYPT_NICE)
    except (AttributeError, OSError):
        pass


def _on_bcrypt_thread(fn: Callable[..., T], *args: object) -> T:
    """Run `fn` on this process's bcrypt threads (made after a fork, never inherited) and wait."""
    global _bcrypt_pool
    with _bcrypt_lock:
        if _bcrypt_pool is None or _bcrypt_pool[0] != os.getpid():
            pool = ThreadPoolExecutor(
                bcrypt_threads(), thread_name_prefix="vgen-bcrypt", initializer=_bcrypt_thread_start
            )
            _bcrypt_pool = (os.getpid(), pool)
        pool = _bcrypt_pool[1]
    return pool.submit(fn, *args).result()


def hash_password(password: str) -> str:
    """Slow on purpose (bcrypt): call it from a worker thread, never on the event loop."""
    rounds = get_settings().bcrypt_rounds
    hashed = _on_bcrypt_thread(bcrypt.hashpw, _prehash(password), bcrypt.gensalt(rounds))
    return hashed.decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return _on_bcrypt_thread(bcrypt.checkpw, _prehash(password), password_hash.encode("ascii"))
    except ValueError:
        return False


@lru_cache(maxsize=4)
def _dummy_hash(rounds: int) -> str:
    """A well-formed bcrypt hash of the configured cost that matches no password. Built from a
    salt, not hashed: hashing it on first use made the first unknown-address login of each worker
    take two bcrypt rounds instead of one. `checkpw` pays the full cost against it all the same."""
    return bcrypt.gensalt(rounds).decode("ascii") + "." * 31


def burn_password_check(password: str) -> None:
    """Spend the time of a real check, so an unknown e-mail answers as slowly as a known one."""
    verify_password(password, _dummy_hash(get_settings().bcrypt_rounds))


def new_token() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
