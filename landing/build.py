"""Build the static landing: `landing/pages/**/*.html` (Jinja2) → `landing/dist/`.

    .venv/bin/python -m landing.build            # build into landing/dist/
    .venv/bin/python -m landing.build --serve    # build, then preview on http://localhost:8080

Every page is discovered from `pages/`: `index.html` becomes `/`, `terms.html` becomes
`/terms/` (written as `terms/index.html`), `lp/lip-sync.html` becomes `/lp/lip-sync/`. A page may
start with TOML front matter between `+++` lines (see `PageMeta`). Layouts and partials live in
`templates/`, files in `static/` are copied to `/static/`, the gallery comes from
`data/examples.toml`.

The build fails loudly (exit status 1, every problem listed) on a template error, an undefined
variable, a missing asset, an unknown page name, a broken internal link or fragment, or a bad
data file, and then leaves the previous `dist/` as it was.
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import math
import os
import re
import shutil
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import jinja2

LANDING = Path(__file__).resolve().parent
MENUS = ("header", "footer")
FRONT_MATTER = re.compile(r"\A\+\+\+[ \t]*\n(.*?)^\+\+\+[ \t]*(?:\n|\Z)", re.DOTALL | re.MULTILINE)
VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm"}
POSTER_TYPES = {".webp", ".jpg", ".jpeg", ".png", ".avif"}


class BuildError(Exception):
    """The site cannot be shipped; `problems` says why (all of them, not just the first)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("landing build failed:\n  - " + "\n  - ".join(problems))


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A period the privacy page states (`{{ period(site.policy.session) }}` → "30 days"), and
    where it comes from: `source` names the setting the app enforces it with (its environment
    variable), or is "commitment:<name>" for what the operator does by hand and no code can
    enforce (answering a request, rolling backups over)."""

    value: int
    unit: str  # "hours", "days" or "months"
    source: str

    def __str__(self) -> str:
        return f"{self.value} {self.unit.removesuffix('s') if self.value == 1 else self.unit}"


COMMITMENT = "commitment"
MONTH_DAYS = 365.25 / 12


def as_months(days: int, source: str) -> Period:
    """`days` as the fewest whole months that cover them ("up to 24 months" for 730 days)."""
    if days < 62:
        return Period(days, "days", source)
    return Period(math.ceil(days / MONTH_DAYS - 1e-9), "months", source)


@dataclass(frozen=True)
class Policy:
    """The privacy page's periods, read at build time from the same settings the app enforces
    them with (tests/landing/test_privacy_periods.py fails if the page says anything else)."""

    # A session ends after this (sessions.create), and its record is deleted then (retention).
    session: Period
    # An activation, reset or e-mail change link expires after this (throttle.link_mails).
    link: Period
    # Analytics are deleted after this: BigQuery's partition expiration (`vgen bigquery init`),
    # and the outbox rows still in our database (retention).
    analytics: Period
    # A delivered analytics-outbox row is deleted this long after BigQuery took it (retention).
    outbox: Period
    # Operator commitments: a request (a copy, a correction, a deletion asked of support) is
    # carried out within this; backups roll over within that.
    requests: Period = Period(30, "days", f"{COMMITMENT}:requests")
    backups: Period = Period(30, "days", f"{COMMITMENT}:backups")

    @classmethod
    def from_settings(cls, settings: Any = None) -> Policy:
        from vgen_app.config import get_settings

        s = settings or get_settings()
        return cls(
            session=Period(s.session_ttl_days, "days", "SESSION_TTL_DAYS"),
            link=Period(s.link_ttl_hours, "hours", "LINK_TTL_HOURS"),
            analytics=as_months(
                s.bigquery_partition_expiration_days, "BIGQUERY_PARTITION_EXPIRATION_DAYS"
            ),
            outbox=Period(s.outbox_keep_days, "days", "OUTBOX_KEEP_DAYS"),
        )


@dataclass(frozen=True)
class Site:
    """What the pages need to know about the world: the app (for sign-up links), support, and the
    periods the privacy page states."""

    app_url: str
    telegram_support_url: str
    landing_url: str
    signup_path: str = "/signup"
    login_path: str = "/login"
    name: str = "vgen"
    description: str = (
        "Make lip-sync videos, face swaps and talking photos from your own footage, voice and "
        "photos. Pay per use with tokens bought in the app."
    )
    year: int = field(default_factory=lambda: datetime.now(UTC).year)
    policy: Policy = field(default_factory=Policy.from_settings)

    @property
    def signup_url(self) -> str:
        return f"{self.app_url}{self.signup_path}"

    @property
    def login_url(self) -> str:
        return f"{self.app_url}{self.login_path}"

    @classmethod
    def from_settings(cls) -> Site:
        """APP_URL, TELEGRAM_SUPPORT_URL, LANDING_URL and the privacy page's periods exactly as
        the app reads them."""
        from vgen_app.config import get_settings
        from vgen_app.ui import routes

        s = get_settings()
        return cls(
            app_url=s.app_url.rstrip("/"),
            telegram_support_url=s.telegram_support_url,
            landing_url=s.landing_url.rstrip("/"),
            signup_path=routes.SIGNUP,
            login_path=routes.LOGIN,
            policy=Policy.from_settings(s),
        )


# --- pages -----------------------------------------------------------------------------------


@dataclass
class Page:
    """One page. Front matter keys (all optional):

    title       <title> and <h1> text                     (default: from the file name)
    description <meta name="description">                (default: the site's)
    nav         label in the navigation, or false         (default: the title)
    menus       where it is listed: "header", "footer"    (default: both)
    order       position in the menus, smaller first      (default: 100)
    path        its URL instead of the one from the file  (e.g. "/404.html")
    """

    source: str  # path under pages/, e.g. "terms.html"
    key: str  # name for url(): "index", "terms", "lp/lip-sync"
    url: str  # "/", "/terms/", "/404.html"
    title: str
    description: str
    nav: str | None
    menus: tuple[str, ...]
    order: int
    extra_front_matter: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> PurePosixPath:
        path = self.url.lstrip("/")
        return PurePosixPath(path + "index.html" if path == "" or path.endswith("/") else path)


PAGE_KEYS = {"title", "description", "nav", "menus", "order", "path"}


def split_front_matter(text: str) -> tuple[dict[str, Any], str, str]:
    """(front matter, raw front matter block, body). The body keeps its line numbers."""
    match = FRONT_MATTER.match(text)
    if not match:
        return {}, "", text
    return tomllib.loads(match.group(1)), match.group(0), text[match.end() :]


def discover_pages(pages_dir: Path, site: Site) -> list[Page]:
    problems: list[str] = []
    pages: list[Page] = []
    for file in sorted(pages_dir.rglob("*.html")):
        rel = file.relative_to(pages_dir).as_posix()
        if any(part.startswith(("_", ".")) for part in rel.split("/")):
            continue  # _drafts/, _partial.html: not pages
        try:
            meta, _, _ = split_front_matter(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"pages/{rel}: bad front matter: {exc}")
            continue
        unknown = set(meta) - PAGE_KEYS
        if unknown:
            problems.append(
                f"pages/{rel}: unknown front matter {sorted(unknown)} (known: {sorted(PAGE_KEYS)})"
            )
            continue
        key = rel.removesuffix(".html")
        if key == "index" or key.endswith("/index"):
            default_url = "/" + key.removesuffix("index")
        else:
            default_url = f"/{key}/"
        key = key.removesuffix("/index") if key != "index" else key
        if not re.fullmatch(r"[a-z0-9][a-z0-9/_-]*", key):
            problems.append(f"pages/{rel}: use lower-case letters, digits, '-' and '_' in names")
            continue
        title = meta.get("title") or key.rsplit("/", 1)[-1].replace("-", " ").capitalize()
        nav = meta.get("nav", title)
        menus = tuple(meta.get("menus", MENUS))
        bad_menus = set(menus) - set(MENUS)
        if bad_menus:
            problems.append(f"pages/{rel}: unknown menus {sorted(bad_menus)} (known: {MENUS})")
        url = meta.get("path", default_url)
        if not isinstance(url, str) or not url.startswith("/") or ".." in url:
            problems.append(f"pages/{rel}: path must be an absolute URL path, got {url!r}")
            continue
        pages.append(
            Page(
                source=f"pages/{rel}",
                key=key,
                url=url,
                title=str(title),
                description=str(meta.get("description") or site.description),
                nav=None if nav is False else str(nav),
                menus=menus if nav is not False else (),
                order=int(meta.get("order", 100)),
            )
        )
    seen: dict[str, str] = {}
    for page in pages:
        if str(page.output) in seen:
            problems.append(f"{page.source} and {seen[str(page.output)]} both write {page.output}")
        seen[str(page.output)] = page.source
    if not any(p.key == "index" for p in pages):
        problems.append("pages/index.html is missing: the site needs a home page")
    if problems:
        raise BuildError(problems)
    return sorted(pages, key=lambda p: (p.order, p.url))


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    category: str
    title: str
    video: str  # under static/
    poster: str  # under static/
    description: str = ""

    @property
    def video_type(self) -> str:
        return VIDEO_TYPES[PurePosixPath(self.video).suffix.lower()]


def load_examples(src: Path) -> list[Example]:
    path = src / "data" / "examples.toml"
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildError([f"data/examples.toml: {exc}"]) from exc
    problems: list[str] = []
    examples: list[Example] = []
    for i, row in enumerate(data.get("example", []), start=1):
        where = f"data/examples.toml example #{i}"
        missing = [k for k in ("category", "title", "video", "poster") if not row.get(k)]
        unknown = set(row) - {"category", "title", "video", "poster", "description"}
        if missing or unknown:
            problems.append(f"{where}: missing {missing}, unknown {sorted(unknown)}")
            continue
        ex = Example(**{k: str(v) for k, v in row.items()})
        if PurePosixPath(ex.video).suffix.lower() not in VIDEO_TYPES:
            problems.append(f"{where}: video must be one of {sorted(VIDEO_TYPES)}: {ex.video}")
        if PurePosixPath(ex.poster).suffix.lower() not in POSTER_TYPES:
            problems.append(f"{where}: poster must be one of {sorted(POSTER_TYPES)}: {ex.poster}")
        for file in (ex.video, ex.poster):
            if not (src / "static" / file).is_file():
                problems.append(f"{where}: static/{file} does not exist")
        examples.append(ex)
    if problems:
        raise BuildError(problems)
    return examples


# --- rendering -------------------------------------------------------------------------------


class PagesLoader(jinja2.FileSystemLoader):
    """Templates from templates/ and pages/; front matter becomes a comment (same line numbers)."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        _, block, body = split_front_matter(source)
        if block:
            source = "{#" + block.replace("#}", "# }") + "#}" + body
        return source, filename, uptodate


def make_env(src: Path, pages: list[Page], site: Site, examples: list[Example]):
    env = jinja2.Environment(
        loader=PagesLoader([src / "templates", src]),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    by_key = {p.key: p for p in pages}
    hashes: dict[str, str] = {}

    def url(key: str) -> str:
        """The URL of a page by its name (`url('terms')`); an unknown name fails the build."""
        name, _, fragment = key.partition("#")
        if name not in by_key:
            raise jinja2.TemplateRuntimeError(f"url({key!r}): no page named {name!r}")
        return by_key[name].url + (f"#{fragment}" if fragment else "")

    def asset(path: str) -> str:
        """The URL of a file under static/, with a content hash; a missing file fails the build."""
        path = path.lstrip("/")
        file = src / "static" / path
        if not file.is_file():
            raise jinja2.TemplateRuntimeError(f"asset({path!r}): static/{path} does not exist")
        if path not in hashes:
            hashes[path] = hashlib.sha256(file.read_bytes()).hexdigest()[:10]
        return f"/static/{path}?v={hashes[path]}"

    def menu(name: str) -> list[Page]:
        return [p for p in pages if name in p.menus and p.nav]

    categories = list(dict.fromkeys(ex.category for ex in examples))
    env.globals.update(
        site=site,
        pages=pages,
        menu=menu,
        url=url,
        asset=asset,
        examples=examples,
        categories=categories,
    )
    return env


def render_pages(src: Path, out: Path, site: Site) -> list[Page]:
    pages = discover_pages(src / "pages", site)
    examples = load_examples(src)
    env = make_env(src, pages, site, examples)
    problems: list[str] = []
    for page in pages:
        try:
            html_text = env.get_template(page.source).render(page=page)
        except jinja2.TemplateError as exc:
            lineno = getattr(exc, "lineno", None)
            where = f"{page.source}:{lineno}" if lineno else page.source
            problems.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        target = out / page.output
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(tidy(html_text), encoding="utf-8")
    if problems:
        raise BuildError(problems)
    return pages


def tidy(text: str) -> str:
    """Drop trailing spaces and runs of blank lines left by template tags."""
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


# --- checking the output -----------------------------------------------------------------------

LINK_ATTRS = {
    ("a", "href"),
    ("area", "href"),
    ("link", "href"),
    ("script", "src"),
    ("img", "src"),
    ("img", "srcset"),
    ("source", "src"),
    ("source", "srcset"),
    ("video", "src"),
    ("video", "poster"),
    ("audio", "src"),
    ("track", "src"),
    ("iframe", "src"),
    ("form", "action"),
}
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)['\"]?\s*\)")


class _Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []  # (tag.attr, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value is None:
                continue
            if name in ("id", "name") and (name == "id" or tag == "a"):
                self.ids.add(value)
            if (tag, name) in LINK_ATTRS:
                urls = [c.strip().split()[0] for c in value.split(",") if c.strip()]
                if not name.endswith("srcset"):
                    urls = [value.strip()]
                self.links.extend((f"{tag}[{name}]", u) for u in urls)


def is_external(link: str) -> bool:
    parts = urlsplit(link)
    return bool(parts.scheme or parts.netloc)


def check_links(out: Path) -> list[str]:
    """Every internal link, asset and #fragment in the built site points at something that exists."""
    problems: list[str] = []
    parsed: dict[Path, _Collector] = {}

    def parse(file: Path) -> _Collector:
        if file not in parsed:
            collector = _Collector()
            collector.feed(file.read_text(encoding="utf-8"))
            collector.close()
            parsed[file] = collector
        return parsed[file]

    def resolve(base_url: str, link: str) -> tuple[Path | None, str]:
        full = urlsplit(urljoin(base_url, link))
        path = unquote(full.path)
        if ".." in PurePosixPath(path).parts:
            return None, full.fragment
        target = out / path.lstrip("/")
        if path.endswith("/") or target.is_dir():
            target = target / "index.html"
        return (target if target.is_file() else None), full.fragment

    sources = sorted(out.rglob("*.html")) + sorted(out.rglob("*.css"))
    for file in sources:
        rel = file.relative_to(out).as_posix()
        base_url = "/" + rel
        if file.suffix == ".html":
            links = parse(file).links
        else:
            links = [("url()", u) for u in CSS_URL.findall(file.read_text(encoding="utf-8"))]
        for where, link in links:
            if not link or is_external(link):
                continue  # http(s):, mailto:, data:, //host: not ours to check
            target, fragment = resolve(base_url, link)
            if target is None:
                problems.append(f"{rel}: {where} {link!r} points at nothing in the site")
                continue
            if fragment and target.suffix == ".html" and fragment not in parse(target).ids:
                problems.append(f"{rel}: {where} {link!r}: no id={fragment!r} in that page")
    return problems


# --- the build -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    out: Path
    pages: list[Page]


def build(src: Path = LANDING, out: Path | None = None, site: Site | None = None) -> BuildResult:
    """Render every page of `src` into `out` (default `src/dist`), check it, then swap it in.

    On any problem a `BuildError` is raised and `out` is left as it was.
    """
    src = Path(src).resolve()
    out = Path(out).resolve() if out else src / "dist"
    site = site or Site.from_settings()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if (src / "static").is_dir():
            shutil.copytree(src / "static", staging / "static")
        pages = render_pages(src, staging, site)
        problems = check_links(staging)
        if problems:
            raise BuildError(problems)
        old = out.with_name(f".{out.name}-old")
        if old.exists():
            shutil.rmtree(old)
        if out.exists():
            out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(out=out, pages=pages)


def serve(directory: Path, port: int) -> None:
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"serving {directory} on http://localhost:{port}/ (Ctrl+C to stop)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the static landing into landing/dist/.")
    parser.add_argument("--src", type=Path, default=LANDING, help="the landing folder")
    parser.add_argument("--out", type=Path, help="output folder (default: <src>/dist)")
    parser.add_argument(
        "--serve",
        nargs="?",
        type=int,
        const=int(os.environ.get("LANDING_PORT", "8080")),
        metavar="PORT",
        help="after building, serve the output on localhost (default port 8080)",
    )
    args = parser.parse_args(argv)
    try:
        result = build(args.src, args.out)
    except BuildError as exc:
        print(exc, file=sys.stderr)
        return 1
    site = Site.from_settings()
    print(f"built {len(result.pages)} pages into {result.out} (sign-up: {site.signup_url})")
    for page in result.pages:
        print(f"  {page.url:<24} {page.source}")
    if args.serve is not None:
        serve(result.out, args.serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
