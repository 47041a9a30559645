"""The static landing: `python -m landing.build` (see landing/README.md)."""
