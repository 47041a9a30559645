"""Passwords and random tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

import bcrypt

from vgen_app.config import get_settings


def _prehash(password: str) -> bytes:
    # bcrypt reads at most 72 bytes; a SHA-256 pre-hash keeps every character of a long
    # (or multi-byte) password significant instead of truncating or crashing.
    digest = hashlib.sha256(password.encode("utf-8")).digest()
    return base64.b64encode(digest)


def hash_password(password: str) -> str:
    """Slow on purpose (bcrypt): call it from a worker thread, never on the event loop."""
    rounds = get_settings().bcrypt_rounds
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), password_hash.encode("ascii"))
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
