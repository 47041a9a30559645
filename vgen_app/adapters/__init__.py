"""Adapters hide the outside world; each has the embedded default and the real system."""
