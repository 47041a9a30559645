"""What a user sees changed: say so in the transaction that changes it (`touch`), and once that
transaction commits their open pages are told (adapters/changes.py). Rolled back: nothing is told.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession

from vgen_app.adapters.changes import get_feed

_KEY = "vgen_touched_users"


def touch(db: OrmSession, *user_ids: str) -> None:
    """These users' open pages follow this change once the transaction commits."""
    db.connection()  # inside a transaction (it begins here if none has): its end decides
    db.info.setdefault(_KEY, set()).update(u for u in user_ids if u)


@event.listens_for(OrmSession, "after_commit")
def _tell(session: OrmSession) -> None:
    users = session.info.pop(_KEY, None)
    if users:
        feed = get_feed()
        for user_id in users:
            feed.publish(user_id)


@event.listens_for(OrmSession, "after_soft_rollback")
def _forget(session: OrmSession, previous_transaction: object) -> None:
    if session.in_transaction():
        return  # a savepoint rolled back: the outer transaction may still commit
    session.info.pop(_KEY, None)
