"""Reflex configuration: offline-safe, one origin, no phoning home."""

import os

# Bun cannot be downloaded on our machines, and nothing should phone home.
os.environ.setdefault("REFLEX_USE_NPM", "1")
os.environ.setdefault("REFLEX_CHECK_LATEST_VERSION", "0")
os.environ.setdefault("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/")

import reflex as rx

from vgen_app import metrics_dir
from vgen_app.config import get_settings

settings = get_settings()
# Before the app (and prometheus-client) is imported: `reflex run` loads this file first, then
# starts the Granian workers, which inherit this launch's PROMETHEUS_MULTIPROC_DIR.
metrics_dir.prepare()

config = rx.Config(
    app_name="vgen_app",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    disable_plugins=[rx.plugins.SitemapPlugin],
    plugins=[
        rx.plugins.RadixThemesPlugin(
            theme=rx.theme(appearance="light", accent_color="indigo", radius="medium")
        )
    ],
    # Reflex reflects any Origin by default; only our own app may talk to the backend.
    cors_allowed_origins=[settings.app_origin],
    trusted_proxy_hops=settings.trusted_proxy_hops,
    frontend_port=settings.app_port,
    backend_host=settings.app_host,
    deploy_url=settings.app_url,
    api_url=settings.app_url,
    redis_url=settings.redis_url,
)
