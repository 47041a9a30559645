"""A no-op event: the floor `bench/event_roundtrip.py` measures every UI event against.

Reflex sends nothing back for an event that changes no state, so a truly empty handler cannot be
timed from the client. `noop` writes the caller's sequence number into one int of this tab's own
state: the smallest delta there is, which is how the client sees its event completed. It touches
no user data, no session, no database.
"""

from __future__ import annotations

import reflex as rx


class ProbeState(rx.State):
    probe_seq: int = 0

    @rx.event
    def noop(self, seq: int):
        self.probe_seq = seq
