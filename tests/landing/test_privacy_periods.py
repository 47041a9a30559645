"""The policy and the code agree (SPEC §9): every period the privacy page states is read from the
setting the app enforces it with, and is what the code does with that setting — measured from the
code itself (a session's expiry, a link's, BigQuery's partition expiration through the real client
against the fake, the retention job's cutoffs), not from the settings. A period typed into the page
by hand, or one that no code enforces, fails here; so does a changed setting the page missed.

The only periods no code can enforce are the operator's commitments (answering a request, rolling
backups over): they are named in COMMITMENTS, so adding one is a decision made here.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from xml.etree.ElementTree import Element

import html5lib
import pytest
from pytest_httpserver import HTTPServer

from landing import build as landing_build
from landing.build import Period, Policy, Site, build
from tests.fakes.fake_bigquery import FakeBigQuery
from vgen_app import clock
from vgen_app.config import get_settings, reset_settings
from vgen_app.models import LinkPurpose, User

LANDING = Path(landing_build.__file__).resolve().parent
COMMITMENTS = {"commitment:requests", "commitment:backups"}
MONTH = timedelta(days=365.25 / 12)
NUMBER = (
    r"\d+|a|an|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|"
    r"thirty|sixty|ninety|hundred"
)
PERIOD = re.compile(
    rf"\b({NUMBER})[\s-]+(second|minute|hour|day|week|fortnight|month|year)s?\b", re.IGNORECASE
)
UNITS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


def site(policy: Policy | None = None) -> Site:
    kwargs = {"policy": policy} if policy is not None else {}
    return Site(
        app_url="https://app.vgen.example",
        telegram_support_url="https://t.me/vgen_test_support_bot",
        landing_url="https://vgen.example",
        **kwargs,
    )


def text_of(el: Element) -> str:
    return " ".join("".join(el.itertext()).split())


def privacy_main(dist: Path) -> Element:
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    root = parser.parse((dist / "privacy" / "index.html").read_bytes(), transport_encoding="utf-8")
    main = root.find("body/main")
    assert main is not None
    return main


# --- what the code enforces, measured -----------------------------------------------------------


class Recorder:
    """Stands in for the database: keeps what a service adds, finds nothing."""

    def __init__(self) -> None:
        self.added: list[object] = []

    def add(self, row: object) -> None:
        self.added.append(row)

    def exec(self, _query: object) -> Recorder:
        return self

    def first(self) -> None:
        return None


def session_lifetime() -> timedelta:
    """From sign-in to the record's deletion: sessions.create's expiry, then retention's cutoff."""
    from vgen_app.services import retention, sessions

    db = Recorder()
    sessions.create(db, "user-1")  # type: ignore[arg-type]
    (row,) = db.added
    now = clock.now()
    assert retention.Cutoffs.at(now).sessions == now  # deleted as soon as it expires
    return row.expires_at - row.created_at  # type: ignore[attr-defined]


def link_lifetime() -> timedelta:
    """An activation, reset or e-mail change link, as throttle.link_mails issues it."""
    from vgen_app.services import throttle

    db = Recorder()
    user = User(id="user-1", email="ann@example.com", password_hash="x")
    throttle.link_mails(db, user, LinkPurpose.RESET, lambda _to, _token: None)  # type: ignore[arg-type]
    (row,) = db.added
    return row.expires_at - row.created_at  # type: ignore[attr-defined]


def outbox_keep() -> timedelta:
    from vgen_app.services import retention

    now = clock.now()
    return now - retention.Cutoffs.at(now).outbox_delivered


def analytics_lifetime(fake: FakeBigQuery, endpoint: str) -> timedelta:
    """BigQuery's partition expiration as `vgen bigquery init` sets it (real client, fake server);
    the outbox rows left in our database are deleted after the same period."""
    from vgen_app.adapters.analytics import init_tables, make_client
    from vgen_app.services import retention

    fake.tables.clear()
    fake.datasets.clear()
    init_tables(make_client("vgen-test", endpoint), "vgen-test", "analytics")
    expirations = {int(t["timePartitioning"]["expirationMs"]) for t in fake.tables.values()}
    assert len(expirations) == 1
    warehouse = timedelta(milliseconds=expirations.pop())
    now = clock.now()
    assert now - retention.Cutoffs.at(now).outbox_any == warehouse
    return warehouse


@pytest.fixture
def measures(httpserver: HTTPServer) -> dict[str, Callable[[], timedelta]]:
    """Each setting the page may cite, and how long the code keeps things with it."""
    fake = FakeBigQuery()
    fake.install(httpserver)
    endpoint = httpserver.url_for("").rstrip("/")
    return {
        "SESSION_TTL_DAYS": session_lifetime,
        "LINK_TTL_HOURS": link_lifetime,
        "OUTBOX_KEEP_DAYS": outbox_keep,
        "BIGQUERY_PARTITION_EXPIRATION_DAYS": lambda: analytics_lifetime(fake, endpoint),
    }


def human(delta: timedelta) -> str:
    if delta % timedelta(days=1):
        return f"{delta / timedelta(hours=1):g} hours"
    return f"{delta.days} days"


# --- the check ----------------------------------------------------------------------------------


def stated(text: str) -> tuple[int, str] | None:
    match = PERIOD.fullmatch(text.strip())
    if match is None or not match.group(1).isdigit():
        return None
    return int(match.group(1)), match.group(2).lower()


def agrees(value: int, unit: str, actual: timedelta) -> bool:
    """The page's period is the code's: exact in hours, days, weeks; in months, the fewest whole
    months that cover what the code keeps ("up to 24 months" for 730 days)."""
    if unit == "month":
        return (value - 1) * MONTH < actual <= value * MONTH
    return unit in UNITS and actual == value * UNITS[unit]


def problems(dist: Path, measures: dict[str, Callable[[], timedelta]]) -> list[str]:
    main = privacy_main(dist)
    every = Counter(m.group(0) for m in PERIOD.finditer(text_of(main)))
    marked = [
        (el.get("data-period") or "", text_of(el))
        for el in main.iter()
        if el.get("data-period") is not None
    ]
    found = []
    for text, n in (every - Counter(text for _, text in marked)).items():
        found.append(f"states {text!r} ({n}x) without a source: use {{{{ period(...) }}}}")
    for source, text in marked:
        period = stated(text)
        if period is None:
            found.append(f"{source}: {text!r} is not a period in figures")
        elif source.startswith("commitment:"):
            if source not in COMMITMENTS:
                found.append(f"{source}: not a declared commitment ({sorted(COMMITMENTS)})")
        elif source not in measures:
            found.append(f"{source}: states {text!r}, but no code enforces it with {source}")
        elif not agrees(*period, actual := measures[source]()):
            found.append(f"{source}: states {text!r}, but the code keeps it {human(actual)}")
    return found


# --- the tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reset_settings()
    return build(LANDING, tmp_path_factory.mktemp("privacy") / "dist", site()).out


def test_the_privacy_page_states_only_periods_the_code_enforces(dist: Path, measures) -> None:
    assert problems(dist, measures) == []
    sources = {el.get("data-period") for el in privacy_main(dist).iter() if el.get("data-period")}
    assert sources == set(measures) | COMMITMENTS  # every one of them is used


def test_the_promises_with_the_default_settings(dist: Path) -> None:
    text = text_of(privacy_main(dist))
    for words in (
        "analytics logs are kept for up to 24 months, then deleted",
        "our database keeps its copy of an entry for 30 days after the entry reaches",
        "expire after 24 hours and work once",
        "end when you sign out, reset your password, or after 30 days",
        "is deleted 30 days after you signed in",
        "when you close it we delete your account, uploads and results within 30 days",
        "when you delete a task, its files are removed from our storage at once",
        "ask support and we delete a task's files",
        "a copy of your data",
    ):
        assert words in text.lower(), words


def test_changed_settings_change_the_page_and_it_still_agrees(
    tmp_path: Path, measures, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "SESSION_TTL_DAYS": "7",
        "LINK_TTL_HOURS": "48",
        "OUTBOX_KEEP_DAYS": "14",
        "BIGQUERY_PARTITION_EXPIRATION_DAYS": "400",
    }.items():
        monkeypatch.setenv(name, value)
    reset_settings()
    assert get_settings().session_ttl_days == 7

    out = build(LANDING, tmp_path / "dist", site()).out  # the policy read as the build runs

    assert problems(out, measures) == []
    text = text_of(privacy_main(out))
    assert "after 7 days" in text and "expire after 48 hours" in text
    assert "up to 14 months" in text and "for 14 days after" in text
    assert "30 days" not in text.replace("within 30 days", "").replace("further 30 days", "")


def test_a_period_typed_into_the_page_fails(tmp_path: Path, measures) -> None:
    src = tmp_path / "landing"
    shutil.copytree(LANDING, src, ignore=shutil.ignore_patterns("dist", ".dist-*", "__pycache__"))
    page = src / "pages" / "privacy.html"
    page.write_text(
        page.read_text().replace(
            "then deleted.", "then deleted. Server logs are kept for 90 days or two weeks."
        )
    )
    out = build(src, tmp_path / "dist", site()).out
    assert problems(out, measures) == [
        "states '90 days' (1x) without a source: use {{ period(...) }}",
        "states 'two weeks' (1x) without a source: use {{ period(...) }}",
    ]


def test_a_period_that_differs_from_the_code_fails(tmp_path: Path, measures) -> None:
    policy = Policy.from_settings()
    wrong = Policy(
        session=Period(14, "days", "SESSION_TTL_DAYS"),  # the app keeps them 30
        link=policy.link,
        analytics=Period(12, "months", "BIGQUERY_PARTITION_EXPIRATION_DAYS"),  # 730 days
        outbox=Period(30, "days", "RETENTION_BATCH"),  # a setting, but not a period of anything
        requests=Period(30, "days", "commitment:someday"),
    )
    out = build(LANDING, tmp_path / "dist", site(wrong)).out
    undeclared = f"commitment:someday: not a declared commitment ({sorted(COMMITMENTS)})"
    assert problems(out, measures) == [
        undeclared,  # "… delete a task's files … within"
        undeclared,  # "… delete your account … within"
        "BIGQUERY_PARTITION_EXPIRATION_DAYS: states '12 months', but the code keeps it 730 days",
        "RETENTION_BATCH: states '30 days', but no code enforces it with RETENTION_BATCH",
        "SESSION_TTL_DAYS: states '14 days', but the code keeps it 30 days",
        "SESSION_TTL_DAYS: states '14 days', but the code keeps it 30 days",
        undeclared,  # "We answer within"
    ]


def test_months_are_the_fewest_that_cover_the_days() -> None:
    from landing.build import as_months

    assert str(as_months(730, "X")) == "24 months"
    assert str(as_months(365, "X")) == "12 months"
    assert str(as_months(400, "X")) == "14 months"
    assert str(as_months(31, "X")) == "31 days"
    assert str(Period(1, "days", "X")) == "1 day"
    for days in (62, 91, 365, 366, 400, 730, 731, 1095):
        months = as_months(days, "X").value
        assert agrees(months, "month", timedelta(days=days)), days
