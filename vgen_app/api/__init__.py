"""HTTP routes (FastAPI), all under /api/…: thin, they call services."""
