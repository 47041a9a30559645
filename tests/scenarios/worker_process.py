"""A bare worker process for the failover test: runs generation rounds until killed."""

import time

from vgen_app import worker

if __name__ == "__main__":
    while True:
        try:
            worker.generation_round()
        except Exception as exc:  # noqa: BLE001 - keep going, like the lifespan loop
            print("round failed:", exc, flush=True)
        time.sleep(0.2)
