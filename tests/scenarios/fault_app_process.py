"""The app's backend as production serves it, for tests that kill it with SIGKILL: Granian (ASGI)
running the Reflex app, whose lifespan tasks include the generation worker with the simulator.

Usage: python tests/scenarios/fault_app_process.py PORT [WORKERS]

Run it in its own session (process group) so the whole group — Granian's supervisor, its workers and
their ffmpeg children — can be killed at once. Set `__REFLEX_SKIP_COMPILE=true` (the name Reflex
reads for its internal REFLEX_SKIP_COMPILE) and a throw-away working directory: the backend then
compiles no frontend and writes nothing into the checkout.
"""

import sys

from granian.constants import Interfaces
from granian.server import Server as Granian

if __name__ == "__main__":
    Granian(
        target="vgen_app.vgen_app:app",
        factory=True,
        address="127.0.0.1",
        port=int(sys.argv[1]),
        interface=Interfaces.ASGI,
        workers=int(sys.argv[2]) if len(sys.argv) > 2 else 1,
    ).serve()
