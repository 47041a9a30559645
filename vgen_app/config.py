"""Settings from the environment, each with an embedded default (SPEC §7).

Nothing here is required: a fresh checkout runs on SQLite, a mail outbox folder, the test checkout,
the generation simulator, local storage and the local analytics outbox.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = ROOT / "var"


def money_label(cents: int, currency: str = "usd") -> str:
    """An amount as people read it: "$10", "$2.50", "12.90 EUR"."""
    amount = cents / 100
    text = f"{amount:,.0f}" if cents % 100 == 0 else f"{amount:,.2f}"
    return f"${text}" if currency == "usd" else f"{text} {currency.upper()}"


class TokenPackage(BaseModel):
    id: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    tokens: int = Field(gt=0)
    price_cents: int = Field(gt=0)
    currency: str = "usd"

    @property
    def price_label(self) -> str:
        return money_label(self.price_cents, self.currency)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Where the app is reachable: links in e-mails, cookie `Secure`, the only CORS origin.
    app_url: str = "http://localhost:3000"
    # Where the landing is served (the built `landing/dist/`).
    landing_url: str = "http://localhost:8080"
    # Interface and port the server binds to; 0.0.0.0 to expose it (behind a proxy).
    app_host: str = "127.0.0.1"
    app_port: int = Field(default=3000, ge=1, le=65535)

    database_url: str = f"sqlite:///{VAR_DIR / 'vgen.db'}"
    redis_url: str | None = None

    admin_token: str | None = None
    # More admin tokens, any of which authenticates (rotation without downtime: add the new one,
    # move the callers, drop the old one): a comma-separated list, or a JSON list of strings.
    # Blank entries are ignored; ADMIN_TOKEN counts as one more. See `admin_tokens_configured`.
    admin_tokens: str | None = None
    # Admin calls refused for a missing or wrong token are audit rows too, but at most this many
    # per minute (per process, and across the cluster); past it they are in the log only. 0: log only.
    admin_audit_refused_per_minute: int = Field(default=20, ge=0, le=10_000)

    # A server worker's event loop and database threads share one CPU (vgen_app/cpu.py); off:
    # the OS places every thread.
    cpu_pin: bool = True

    resend_api_key: str | None = None
    resend_api_url: str | None = None  # tests point the real client at a local fake
    mail_from: str = "vgen <no-reply@vgen.local>"
    mail_outbox_dir: Path = VAR_DIR / "outbox"

    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None  # tests point the real client at a local fake
    # Checkout switches, sent to Stripe only when on: promotion codes on the payment page,
    # Stripe Tax (needs Stripe Tax set up in the dashboard), a post-purchase invoice.
    stripe_allow_promotion_codes: bool = False
    stripe_automatic_tax: bool = False
    stripe_invoice_creation: bool = False
    # Top-up packages (one-off payments; no subscriptions). JSON in the environment.
    token_packages: list[TokenPackage] = Field(
        default_factory=lambda: [
            TokenPackage(id="10k", tokens=10_000, price_cents=1_000),
            TokenPackage(id="30k", tokens=30_000, price_cents=2_500),
            TokenPackage(id="70k", tokens=70_000, price_cents=5_000),
        ]
    )

    generation_api_url: str | None = None
    generation_api_key: str | None = None
    # The local simulator (when GENERATION_API_URL is unset).
    generation_sim_delay_seconds: float = Field(default=3.0, ge=0)
    generation_sim_failure_rate: float = Field(default=0.0, ge=0, le=1)
    generation_sim_expiry_seconds: float = Field(default=3600, gt=0)
    generation_sim_dir: Path = VAR_DIR / "simulator"
    # A run still unfinished after this long fails (and is refunded).
    run_timeout_seconds: int = Field(default=900, ge=10)
    # How often the worker looks at queued and in-flight runs.
    worker_poll_seconds: float = Field(default=1.0, gt=0)
    # A background job's lease: a worker that stops renewing it (dead) loses it after this long.
    worker_lease_seconds: float = Field(default=5.0, gt=0)
    # Log format: "json" (one object per line, for log shippers) or "text".
    log_format: str = Field(default="text", pattern="^(json|text)$")
    # Prometheus metrics (GET /metrics, services/metrics.py): the folder under which the process
    # that launches the workers makes this launch's own folder of per-worker counter files
    # (PROMETHEUS_MULTIPROC_DIR, if set, is used as it is instead); how long the gauges read from
    # the database are reused before a scrape reads them again.
    metrics_dir: Path = VAR_DIR / "metrics"
    metrics_cache_seconds: float = Field(default=5.0, ge=0)
    # The largest request body any /api/… route accepts: 413 above it, refused from the declared
    # Content-Length before reading, or while reading a body sent without one. Routes keep stricter
    # caps of their own (admin API 64 KiB, Stripe webhook 512 KiB). Uploads (Reflex's /_upload)
    # are not under /api: each slot's size limit is enforced while they stream.
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Where uploads are spooled while streaming in (then moved into storage).
    upload_tmp_dir: Path = VAR_DIR / "uploads"

    storage_url: str = f"file://{VAR_DIR / 'storage'}"
    s3_endpoint_url: str | None = None

    bigquery_project: str | None = None
    bigquery_dataset: str = "vgen"
    bigquery_location: str = "US"
    bigquery_api_endpoint: str | None = None  # a local fake in tests and benchmarks
    bigquery_retry_deadline_seconds: float = Field(default=30.0, gt=0)
    # Each BigQuery table's partitions (one per day) are deleted this many days after their day
    # (`vgen bigquery init` sets it, on existing tables too); the privacy page's analytics period.
    bigquery_partition_expiration_days: int = Field(default=730, gt=0)
    # The shipper: rows per batch, pause between rounds, longest backoff while BigQuery is down.
    analytics_batch_size: int = Field(default=500, ge=1, le=10_000)
    analytics_ship_interval_seconds: float = Field(default=2.0, gt=0)
    analytics_max_backoff_seconds: float = Field(default=60.0, gt=0)
    # Retention (services/retention.py): delivered analytics-outbox rows are deleted this many
    # days after BigQuery took them (undelivered rows wait to be shipped).
    outbox_keep_days: int = Field(default=30, gt=0)
    # The retention job: every this many seconds, once per cluster; at most this many rows per
    # DELETE statement (each one its own short transaction).
    retention_every_seconds: float = Field(default=3600, gt=0)
    retention_batch: int = Field(default=500, gt=0, le=10_000)

    telegram_support_url: str = "https://t.me/vgen_support_bot"

    trusted_proxy_hops: int = Field(default=0, ge=0)

    # Security knobs.
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    session_ttl_days: int = Field(default=30, ge=1)
    link_ttl_hours: int = Field(default=24, ge=1)
    login_ticket_ttl_seconds: int = Field(default=60, ge=5)
    # Failed logins allowed per e-mail / per IP within the window before refusing.
    login_max_failures_per_email: int = 5
    login_max_failures_per_ip: int = 20
    login_failure_window_minutes: int = 15
    # One link mail per address per this many seconds.
    mail_link_interval_seconds: int = 60
    # Sign-ups / link requests allowed per IP per hour.
    signups_per_ip_per_hour: int = 20
    link_requests_per_ip_per_hour: int = 30

    @field_validator("admin_tokens")
    @classmethod
    def _tokens_list(cls, v: str | None) -> str | None:
        if v is not None and v.strip().startswith("["):
            parsed = json.loads(v)  # a malformed JSON list fails at startup, not on a call
            if not isinstance(parsed, list) or not all(isinstance(t, str) for t in parsed):
                raise ValueError("ADMIN_TOKENS as JSON must be a list of strings")
        return v

    @property
    def admin_tokens_configured(self) -> list[str]:
        """Every admin token that authenticates: ADMIN_TOKEN and ADMIN_TOKENS, stripped, blank
        ones dropped, each once. Empty: the admin API is disabled (503)."""
        raw = (self.admin_tokens or "").strip()
        listed = json.loads(raw) if raw.startswith("[") else raw.split(",")
        tokens = [t.strip() for t in [self.admin_token or "", *listed]]
        return list(dict.fromkeys(t for t in tokens if t))

    @field_validator("app_url", "landing_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @property
    def app_origin(self) -> str:
        parts = urlsplit(self.app_url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def cookie_secure(self) -> bool:
        return self.app_url.startswith("https://")

    def link(self, path: str) -> str:
        """An absolute link into the app (for e-mails)."""
        return f"{self.app_url}{path}"


_settings: Settings | None = None
_generation = 0  # bumped by reset_settings(): a read begun before a reset is never cached
_settings_lock = threading.Lock()


def get_settings() -> Settings:
    global _settings
    current = _settings
    if current is not None:
        return current
    with _settings_lock:
        began = _generation
    fresh = Settings()  # outside the lock: reading the environment and .env is slow-ish
    with _settings_lock:
        if _settings is None and began == _generation:
            _settings = fresh
        return fresh


def reset_settings() -> None:
    """Forget cached settings (tests change the environment)."""
    global _settings, _generation
    with _settings_lock:
        _settings = None
        _generation += 1
