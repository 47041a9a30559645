"""The static landing (SPEC §6): built from `landing/`, checked as a visitor and a crawler would.

Every test builds into a temporary folder (never `landing/dist/`) with a known APP_URL and
Telegram link, so the assertions can compare exact URLs.
"""

from __future__ import annotations

import itertools
import re
import shutil
import tomllib
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit
from xml.etree.ElementTree import Element

import html5lib
import pytest

from landing import build as landing_build
from landing.build import BuildError, Site, build

LANDING = Path(landing_build.__file__).resolve().parent
SITE = Site(
    app_url="https://app.vgen.example",
    telegram_support_url="https://t.me/vgen_test_support_bot",
    landing_url="https://vgen.example",
)
SIGNUP = "https://app.vgen.example/signup"
PRICE = re.compile(
    r"[$€£¥₽]\s?\d"
    r"|\d[\d,.]*\s?(?:usd|eur|gbp|rub|dollars?|euros?|cents?)\b"
    r"|\b(?:usd|eur|gbp|us\$)\s?\d"
    r"|per\s+month|/\s?mo(?:nth)?\b|monthly"
    r"|\d[\d,]*\s?k?\s?tokens?\b",
    re.IGNORECASE,
)


# --- helpers ------------------------------------------------------------------------------------


def parse(path: Path) -> Element:
    """The page as an element tree; html5lib in strict mode raises on any HTML parse error."""
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    return parser.parse(path.read_bytes(), transport_encoding="utf-8")


def pages_of(dist: Path) -> list[Path]:
    return sorted(p for p in dist.rglob("*.html") if "static" not in p.parts)


def url_of(dist: Path, page: Path) -> str:
    rel = page.relative_to(dist).as_posix()
    return "/" + rel.removesuffix("index.html")


def text_of(el: Element) -> str:
    return " ".join("".join(el.itertext()).split())


def local_file(dist: Path, base_url: str, link: str) -> tuple[Path | None, str]:
    """The file an internal link serves (as a static server would), and its fragment."""
    full = urlsplit(urljoin(base_url, link))
    target = dist / unquote(full.path).lstrip("/")
    if full.path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return (target if target.is_file() else None), full.fragment


def links_of(root: Element) -> list[tuple[str, str]]:
    found = []
    for el in root.iter():
        for attr in ("href", "src", "poster", "srcset"):
            value = el.get(attr)
            if value is None:
                continue
            urls = (
                [c.split()[0] for c in value.split(",") if c.strip()]
                if attr == "srcset"
                else [value]
            )
            found += [(f"{el.tag}[{attr}]", u) for u in urls]
    return found


def is_external(link: str) -> bool:
    parts = urlsplit(link)
    return bool(parts.scheme or parts.netloc)


def check_site(dist: Path) -> list[str]:
    """Independent of the build's own checker: every internal link, asset and #fragment exists."""
    problems = []
    for page in pages_of(dist):
        base = url_of(dist, page)
        for where, link in links_of(parse(page)):
            if is_external(link):
                continue
            target, fragment = local_file(dist, base, link)
            if target is None:
                problems.append(f"{base}: {where}={link} is missing")
            elif fragment and target.suffix == ".html":
                ids = {el.get("id") for el in parse(target).iter()}
                if fragment not in ids:
                    problems.append(f"{base}: {where}={link}: no #{fragment}")
    return problems


def copy_landing(dest: Path) -> Path:
    """A working copy of the landing sources (no dist), to change freely."""
    shutil.copytree(
        LANDING,
        dest,
        ignore=shutil.ignore_patterns("dist", ".dist-*", "__pycache__", "tools", "README.md"),
    )
    return dest


def signup_links(el: Element) -> list[Element]:
    return [a for a in el.iter("a") if a.get("data-signup") is not None]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("landing") / "dist"
    result = build(LANDING, out, SITE)
    assert result.out == out
    return out


# --- every page -------------------------------------------------------------------------------


def test_the_build_writes_the_three_required_pages_and_discovers_the_rest(dist: Path):
    urls = {url_of(dist, p) for p in pages_of(dist)}
    assert {"/", "/terms/", "/privacy/"} <= urls
    sources = {
        "/" + p.relative_to(LANDING / "pages").as_posix().removesuffix(".html")
        for p in (LANDING / "pages").rglob("*.html")
        if not any(part.startswith("_") for part in p.parts)
    }
    # One output page per template (index → /, 404 → /404.html, the others → /name/).
    assert len(urls) == len(sources)


def test_every_page_is_valid_html_with_the_basics(dist: Path):
    for page in pages_of(dist):
        root = parse(page)  # raises on any parse error
        where = url_of(dist, page)
        assert page.read_text().startswith("<!doctype html>"), where
        assert root.get("lang") == "en", where
        title = root.find("head/title")
        assert title is not None and text_of(title), where
        assert root.find("head/meta[@charset='utf-8']") is not None, where
        viewport = root.find("head/meta[@name='viewport']")
        assert viewport is not None and "width=device-width" in viewport.get("content"), where
        description = root.find("head/meta[@name='description']")
        assert description is not None and len(description.get("content")) > 40, where
        assert len(list(root.iter("h1"))) == 1, f"{where}: exactly one <h1>"
        ids = [el.get("id") for el in root.iter() if el.get("id")]
        assert len(ids) == len(set(ids)), f"{where}: duplicate ids"


def test_every_page_is_accessible_in_structure(dist: Path):
    for page in pages_of(dist):
        root = parse(page)
        where = url_of(dist, page)
        body = root.find("body")
        # Landmarks: one banner, one main, one contentinfo, labelled navigation.
        assert [el.tag for el in body if el.tag in ("header", "main", "footer")] == [
            "header",
            "main",
            "footer",
        ], where
        navs = list(root.iter("nav"))
        assert navs and all(n.get("aria-label") for n in navs), where
        # A skip link to the main content comes first.
        skip = body.find("a")
        assert skip is not None and skip.get("href") == "#main", where
        assert root.find(".//main[@id='main']") is not None, where
        for img in root.iter("img"):
            assert img.get("alt") is not None, f"{where}: <img> without alt"
            assert img.get("width") and img.get("height"), f"{where}: <img> without size"
        for video in root.iter("video"):
            assert video.get("aria-label"), f"{where}: <video> without an accessible name"
        for a in root.iter("a"):
            assert text_of(a) or a.get("aria-label"), f"{where}: link without text"
        levels = [int(el.tag[1]) for el in root.iter() if re.fullmatch(r"h[1-6]", str(el.tag))]
        assert levels[0] == 1, f"{where}: the first heading is the h1"
        assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), (
            f"{where}: a heading level is skipped: {levels}"
        )


def test_every_page_has_the_signup_cta_in_the_header_and_at_the_end(dist: Path):
    for page in pages_of(dist):
        root = parse(page)
        where = url_of(dist, page)
        header = root.find("body/header")
        main = root.find("body/main")
        in_header = signup_links(header)
        assert [a.get("href") for a in in_header] == [SIGNUP], where
        last_section = [el for el in main if el.tag == "section"][-1]
        assert "cta-band" in last_section.get("class", ""), f"{where}: the page ends with the CTA"
        closing = signup_links(last_section)
        assert closing and all(a.get("href") == SIGNUP for a in closing), where
        # Every sign-up link of the page goes to the app's sign-up page.
        assert all(a.get("href") == SIGNUP for a in signup_links(root)), where
        assert any(a.get("href") == SIGNUP for a in root.iter("a")), where


def test_every_page_loads_the_utm_script_and_nothing_from_elsewhere(dist: Path):
    for page in pages_of(dist):
        root = parse(page)
        where = url_of(dist, page)
        scripts = list(root.iter("script"))
        assert [s.get("src", "").split("?")[0] for s in scripts] == ["/static/js/utm.js"], where
        assert scripts[0].get("defer") is not None, where
        for tag, link in links_of(root):
            if tag.startswith("a["):
                continue  # links may go out (the app, Telegram); resources may not
            assert not is_external(link), f"{where}: {tag}={link} loads from another site"
    css = (dist / "static/css/site.css").read_text()
    assert "@import" not in css and "http" not in css, "no web fonts or remote CSS"


def test_every_internal_link_asset_and_fragment_exists(dist: Path):
    assert check_site(dist) == []
    assert landing_build.check_links(dist) == []


def test_no_page_contains_a_price(dist: Path):
    for page in pages_of(dist):
        root = parse(page)
        text = text_of(root.find("body")) + " " + text_of(root.find("head"))
        match = PRICE.search(text)
        assert match is None, f"{url_of(dist, page)}: looks like a price: {match.group(0)!r}"


def test_the_price_check_would_catch_prices():
    for text in ("only $9", "10 USD", "25 usd", "€5", "10,000 tokens", "USD 10", "$4.99/mo",
                 "9 per month", "billed monthly", "70k tokens"):  # fmt: skip
        assert PRICE.search(text), text
    for text in ("Tokens are bought inside the app", "step 3", "24 hours", "in 2026", "MP4"):
        assert not PRICE.search(text), text


# --- the product page -------------------------------------------------------------------------


def test_product_page_says_what_and_for_whom_and_how_it_works(dist: Path):
    root = parse(dist / "index.html")
    text = text_of(root.find("body"))
    for words in ("Lip sync", "Face swap", "Talking photo", "How it works", "Upload",
                  "Choose a model", "Get the video"):  # fmt: skip
        assert words in text, words
    steps = root.findall(".//section[@id='how']//ol/li")
    assert len(steps) == 3
    assert "bought inside the app" in text or "buy tokens inside the app" in text.lower()
    assert "inexpensive" in text.lower()
    assert root.findall(".//section[@id='faq']//details/summary"), "an FAQ"


def test_product_page_shows_5_to_10_examples_in_at_least_3_categories(dist: Path):
    root = parse(dist / "index.html")
    gallery = root.find(".//section[@id='examples']")
    items = gallery.findall(".//li[@class='example']")
    assert 5 <= len(items) <= 10
    categories = {text_of(item.find(".//span")) for item in items}
    assert len(categories) >= 3, categories
    for item in items:
        video = item.find(".//video")
        assert video.get("controls") is not None and video.get("preload") == "none"
        assert text_of(item.find(".//figcaption")), "each example has a caption"
        poster, _ = local_file(dist, "/", video.get("poster"))
        source = video.find("source")
        clip, _ = local_file(dist, "/", source.get("src"))
        assert poster is not None and poster.stat().st_size > 1000, video.get("poster")
        assert clip is not None and clip.stat().st_size > 1000, source.get("src")
        assert source.get("type") == "video/mp4"
    # The gallery is the data file, in its order.
    data = tomllib.loads((LANDING / "data/examples.toml").read_text())["example"]
    titles = [text_of(item.find(".//h3")) for item in items]
    assert titles == [row["title"] for row in data]


def test_the_sample_clips_are_small_h264_videos_that_ship_with_the_repo():
    import av

    files = sorted((LANDING / "static/examples").iterdir())
    data = tomllib.loads((LANDING / "data/examples.toml").read_text())["example"]
    used = {row[k] for row in data for k in ("video", "poster")}
    assert {f"examples/{f.name}" for f in files} == used, (
        "every shipped file is used, and only them"
    )
    assert sum(f.stat().st_size for f in files) < 1_500_000
    for f in files:
        assert f.stat().st_size <= 160_000, f.name
        if f.suffix == ".mp4":
            with av.open(str(f)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264", f.name
                assert 1 <= float(container.duration / av.time_base) <= 10, f.name
                assert stream.codec_context.pix_fmt == "yuv420p", f.name


def test_product_page_links_the_telegram_support_bot(dist: Path):
    root = parse(dist / "index.html")
    tg = [a for a in root.iter("a") if a.get("href") == SITE.telegram_support_url]
    assert len(tg) >= 2  # in the page and in the footer
    assert any(a in root.find("body/footer").iter("a") for a in tg)
    for page in pages_of(dist):  # and in every footer
        footer = parse(page).find("body/footer")
        assert any(a.get("href") == SITE.telegram_support_url for a in footer.iter("a"))


def test_terms_and_privacy_cover_what_this_product_needs(dist: Path):
    terms = text_of(parse(dist / "terms/index.html").find("body/main")).lower()
    for words in ("account", "prepaid", "tokens", "refund", "failed", "consent", "voice",
                  "sexual", "decepti", "no subscription"):  # fmt: skip
        assert words in terms, f"terms: {words}"
    privacy = text_of(parse(dist / "privacy/index.html").find("body/main")).lower()
    for words in ("upload", "how long we keep", "analytics", "ip address", "user agent",
                  "utm_", "bigquery", "delete", "cookie"):  # fmt: skip
        assert words in privacy, f"privacy: {words}"


# --- navigation and adding pages --------------------------------------------------------------


def test_navigation_lists_the_pages_and_marks_the_current_one(dist: Path):
    for page in pages_of(dist):
        root = parse(page)
        footer_links = {a.get("href") for a in root.find("body/footer").iter("a")}
        assert {"/", "/terms/", "/privacy/"} <= footer_links
        # Campaign and error pages stay out of the menus.
        assert "/lp/lip-sync/" not in footer_links and "/404.html" not in footer_links
    terms = parse(dist / "terms/index.html")
    current = [a for a in terms.iter("a") if a.get("aria-current") == "page"]
    assert current and {a.get("href") for a in current} == {"/terms/"}


def test_adding_a_template_adds_a_page_with_working_navigation(tmp_path: Path):
    src = copy_landing(tmp_path / "landing")
    before = len(list((src / "pages").rglob("*.html")))
    (src / "pages" / "for-teams.html").write_text(
        '+++\ntitle = "vgen for teams"\nnav = "Teams"\norder = 50\n+++\n'
        '{% extends "base.html" %}\n{% block content %}\n'
        '<section class="container"><h1>{{ page.title }}</h1>'
        "<p>See <a href=\"{{ url('privacy') }}#retention\">how long we keep files</a>.</p>"
        "</section>\n{% endblock %}\n"
    )
    out = build(src, tmp_path / "dist", SITE).out

    new = out / "for-teams" / "index.html"
    assert new.is_file()
    root = parse(new)
    assert text_of(root.find("head/title")) == "vgen for teams · vgen"
    assert [a.get("href") for a in signup_links(root.find("body/header"))] == [SIGNUP]
    for page in pages_of(out):
        page_root = parse(page)
        nav = page_root.find("body/header//nav")
        footer = page_root.find("body/footer")
        assert "/for-teams/" in {a.get("href") for a in nav.iter("a")}, url_of(out, page)
        assert "/for-teams/" in {a.get("href") for a in footer.iter("a")}, url_of(out, page)
    here = [a for a in root.iter("a") if a.get("aria-current") == "page"]
    assert {a.get("href") for a in here} == {"/for-teams/"}
    assert check_site(out) == []
    assert len(pages_of(out)) == before + 1


def test_front_matter_is_optional(tmp_path: Path):
    src = copy_landing(tmp_path / "landing")
    (src / "pages" / "press-kit.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>Press</h1>{% endblock %}'
    )
    out = build(src, tmp_path / "dist", SITE).out
    root = parse(out / "press-kit/index.html")
    assert text_of(root.find("head/title")) == "Press kit · vgen"
    assert "/press-kit/" in {a.get("href") for a in parse(out / "index.html").iter("a")}


def test_pages_starting_with_an_underscore_are_not_pages(tmp_path: Path):
    src = copy_landing(tmp_path / "landing")
    (src / "pages" / "_draft.html").write_text("{{ this would not even render }}")
    out = build(src, tmp_path / "dist", SITE).out
    assert not (out / "_draft").exists()


# --- the build fails loudly -------------------------------------------------------------------


def _page(src: Path, name: str, body: str, front: str = "") -> None:
    text = (f"+++\n{front}\n+++\n" if front else "") + (
        '{% extends "base.html" %}{% block content %}<h1>x</h1>' + body + "{% endblock %}"
    )
    path = src / "pages" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("body", "front", "expected"),
    [
        ('<a href="/no-such-page/">x</a>', "", "/no-such-page/"),
        ('<a href="terms">x</a>', "", "'terms'"),  # relative to /broken/: /broken/terms
        ('<a href="/#no-such-section">x</a>', "", "no-such-section"),
        ('<img src="/static/img/missing.png" alt="" width="1" height="1">', "", "missing.png"),
        ('<img src="{{ asset(\'img/missing.png\') }}" alt="">', "", "static/img/missing.png"),
        ("<a href=\"{{ url('pricing') }}\">x</a>", "", "no page named 'pricing'"),
        ("{{ no_such_variable }}", "", "no_such_variable"),
        ("{% if %}", "", "TemplateSyntaxError"),
        ("", 'colour = "red"', "unknown front matter"),
        ("", "title = ", "bad front matter"),
    ],
)
def test_the_build_fails_loudly_and_keeps_the_previous_output(
    tmp_path: Path, body: str, front: str, expected: str
):
    src = copy_landing(tmp_path / "landing")
    out = tmp_path / "dist"
    build(src, out, SITE)
    shipped = (out / "index.html").read_text()

    _page(src, "broken.html", body, front)
    with pytest.raises(BuildError) as info:
        build(src, out, SITE)
    assert expected in str(info.value)
    assert (out / "index.html").read_text() == shipped, "the last good site stays"
    assert not (out / "broken").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_missing_example_file_fails_the_build(tmp_path: Path):
    src = copy_landing(tmp_path / "landing")
    (src / "static/examples/faceswap-party.webp").unlink()
    with pytest.raises(BuildError, match="faceswap-party.webp does not exist"):
        build(src, tmp_path / "dist", SITE)


def test_an_example_without_a_category_fails_the_build(tmp_path: Path):
    src = copy_landing(tmp_path / "landing")
    data = src / "data/examples.toml"
    data.write_text(data.read_text().replace('category = "Face swap"', "", 1))
    with pytest.raises(BuildError, match=r"missing \['category'\]"):
        build(src, tmp_path / "dist", SITE)


def test_two_pages_writing_the_same_file_fail_the_build(tmp_path: Path):
    src = copy_landing(tmp_path / "landing")
    _page(src, "terms/index.html", "")
    with pytest.raises(BuildError, match="both write terms/index.html"):
        build(src, tmp_path / "dist", SITE)


def test_the_command_line_builds_and_reports_failure(tmp_path: Path, capsys):
    src = copy_landing(tmp_path / "landing")
    assert landing_build.main(["--src", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "built" in capsys.readouterr().out
    assert (tmp_path / "out/index.html").is_file()
    _page(src, "broken.html", '<a href="/nowhere/">x</a>')
    assert landing_build.main(["--src", str(src), "--out", str(tmp_path / "out")]) == 1
    assert "/nowhere/" in capsys.readouterr().err


# --- configuration ----------------------------------------------------------------------------


def test_the_links_come_from_the_app_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from vgen_app.config import reset_settings

    monkeypatch.setenv("APP_URL", "https://app.vgen.com/")
    monkeypatch.setenv("TELEGRAM_SUPPORT_URL", "https://t.me/our_real_bot")
    reset_settings()
    site = Site.from_settings()
    assert site.signup_url == "https://app.vgen.com/signup"
    assert site.login_url == "https://app.vgen.com/login"
    out = build(LANDING, tmp_path / "dist", site).out
    root = parse(out / "index.html")
    hrefs = {a.get("href") for a in root.iter("a")}
    assert {"https://app.vgen.com/signup", "https://t.me/our_real_bot"} <= hrefs


def test_the_defaults_need_no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from vgen_app.config import reset_settings

    for var in ("APP_URL", "TELEGRAM_SUPPORT_URL", "LANDING_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file in the way
    reset_settings()
    site = Site.from_settings()
    assert site.signup_url == "http://localhost:3000/signup"
    assert site.telegram_support_url == "https://t.me/vgen_support_bot"
