"""Leases: one holder at a time runs a cluster-wide job; a holder that stops renewing loses it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from vgen_app import clock
from vgen_app.models import Lease


def acquire(db: Session, name: str, holder: str, ttl_s: float) -> bool:
    """Take or renew the lease; False while another holder's lease is still valid."""
    now = clock.now()
    expires = now + timedelta(seconds=ttl_s)
    result = db.exec(
        update(Lease)
        .where(
            col(Lease.name) == name, or_(col(Lease.holder) == holder, col(Lease.expires_at) < now)
        )
        .values(holder=holder, expires_at=expires)
    )
    if result.rowcount == 1:
        db.commit()
        return True
    db.add(Lease(name=name, holder=holder, expires_at=expires))
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        return False
    return True


def release(db: Session, name: str, holder: str) -> None:
    db.exec(
        update(Lease)
        .where(col(Lease.name) == name, col(Lease.holder) == holder)
        .values(expires_at=clock.now() - timedelta(seconds=1))
    )
    db.commit()
