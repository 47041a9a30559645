"""Time to a usable page in Chromium (issue P): from navigation start to the moment the page can
be used — hydrated and its `on_load` answered (its data on screen) — for `/`, `/tasks/{id}` and
`/tokens` of the app, against a blank Reflex 0.10.1 page in the same run (target <= 1.3x).

SUBJECT: the app as `make run` starts it (bench/reflex_client.py `AppServer`: production build,
one granian worker, SQLite), one signed-in user (a session cookie made through the services) with
3 tasks of 3 succeeded runs each and 30 balance changes. A page is usable when the element that
its on_load fills is in the DOM and visible (`checkVisibility()`): the tasks table's first row
link (`/`), the run list (`/tasks/…`), a row of the balance history (`/tokens`).
FLOOR: a blank Reflex app (one page: a button disabled until its on_load has set a var), built
and run the same way (`reflex run --env prod`, its own port and build folder), usable when the
button is enabled — what every Reflex page pays: the HTML, the JS, the socket, hydration and one
on_load round trip.

Measured in the page: an init script watches the DOM (MutationObserver) and records
`performance.now()` (ms since the navigation started) when the element first appears. Each
navigation is a fresh browser context (no cache, no service worker: a first visit), headless
/usr/bin/chromium; pages interleaved, --reps each, median reported.

    .venv/bin/python bench/time_to_usable.py [--reps 9] [--trace DIR [--trace-reps 7]]

--trace DIR: after the timed runs, --trace-reps more first visits of each page (interleaved),
instrumented; their milestones (medians of the untraced ones) and phases are printed per page.
The first of them also records a Chromium performance
trace (DIR/<page>.trace.json, opens in chrome://tracing or DevTools' Performance panel), the
websocket frames (in the page: a wrapped `WebSocket` timestamps each send/receive with
`performance.now()`; on the wire: CDP `Network.webSocketFrameSent/Received`, mapped to the
page's clock through the handshake's wall time and `performance.timeOrigin`), Navigation/
Resource/Paint Timing and long tasks; the traced visit printed as a per-page breakdown — navigation -> HTML -> DOMContentLoaded -> JS
evaluated (the transport Reflex opens when state.js is evaluated) -> socket open -> hydrate sent
(React mounted) -> each server reply -> usable — with the renderer main thread's busy time in
each interval (trace self time: script, style/layout, paint, GC, ipc, other) and the V8 CPU
samples of the main phases by script file. Also DIR/<page>.json.
The timed runs and their output are the same with or without it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port
from first_load_js import BLANK_RXCONFIG  # the same blank app's config
from reflex_client import AppServer, session_cookie_for, use_app_settings

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
TARGET = 1.3

BLANK_APP = """import reflex as rx


class S(rx.State):
    loaded: bool = False

    @rx.event
    def on_load(self):
        self.loaded = True


def index() -> rx.Component:
    return rx.button("Ready", disabled=~S.loaded, id="ready")


app = rx.App()
app.add_page(index, route="/", on_load=S.on_load)
"""

WATCH = """
(() => {
  const selector = %r;
  const seen = () => {
    const el = window.__usableAt === undefined && document.querySelector(selector);
    // On screen, not only in the DOM (a frame rendered hidden until the session is confirmed).
    if (el && el.checkVisibility()) {
      window.__usableAt = performance.now();
    }
  };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true, attributes: true});
  document.addEventListener("DOMContentLoaded", seen);
})();
"""


class BlankServer:
    def __init__(self, work: Path) -> None:
        self.dir = work / "blank"
        (self.dir / "blankapp").mkdir(parents=True, exist_ok=True)
        (self.dir / "blankapp" / "__init__.py").write_text("")
        (self.dir / "blankapp" / "blankapp.py").write_text(BLANK_APP)
        (self.dir / "rxconfig.py").write_text(BLANK_RXCONFIG)
        self.port = free_port()
        self.url = f"http://localhost:{self.port}"
        self.log = work / "blank.log"
        self.proc: subprocess.Popen | None = None
        self.web = work / "blank_web"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REFLEX_", "REDIS"))}
        env.update(
            PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
            REFLEX_CHECK_LATEST_VERSION="0",
            REFLEX_USE_NPM="1",
            NPM_CONFIG_REGISTRY="https://registry.npmjs.org/",
            REFLEX_WEB_WORKDIR=str(self.web),
        )
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "reflex"), "run", "--env", "prod", "--frontend-port", str(self.port),
             "--backend-host", "127.0.0.1"],
            cwd=self.dir, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"blank app exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise SystemExit("blank app did not start")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=15)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)


def seed() -> tuple[str, str]:
    """The signed-in user: (cookie header, first task id)."""
    from vgen_app import clock
    from vgen_app.db import session_scope
    from vgen_app.models import Run, RunStatus
    from vgen_app.services import ledger, tasks

    user_id, cookie = session_cookie_for("usable@example.com")
    first = ""
    with session_scope() as db:
        ledger.change_balance(db, user_id, 5000, "manual")
        for k in range(3):
            task = tasks.create_task(db, user_id, "lipsync", f"Usable task {k + 1}")
            first = first or task.id
            for a in range(1, 4):
                db.add(
                    Run(task_id=task.id, owner_id=user_id, attempt=a, price=10,
                        status=RunStatus.SUCCEEDED, model="lipsync", inputs={},
                        finished_mail_at=clock.now())
                )  # fmt: skip
            db.commit()
    for i in range(30):
        with session_scope() as db:
            ledger.change_balance(db, user_id, -1, "manual", note=f"bench {i}")
    return cookie, first


def measure(browser, url: str, selector: str, cookie: str | None) -> float:
    context = browser.new_context()
    try:
        if cookie:
            name, _, value = cookie.partition("=")
            origin = "/".join(url.split("/", 3)[:3])  # the cookie for every path of the site
            context.add_cookies([{"name": name, "value": value, "url": origin + "/"}])
        context.add_init_script(WATCH % selector)
        page = context.new_page()
        page.goto(url, wait_until="commit")
        try:
            page.wait_for_function("window.__usableAt !== undefined", timeout=60_000)
        except Exception:
            print(f"not usable: {url} ({selector}): {page.inner_text('body')[:1500]!r}")
            raise
        return float(page.evaluate("window.__usableAt"))
    finally:
        context.close()


# --- --trace: one visit of each page, profiled ---------------------------------------------------

# Before any page script: timestamps of every websocket event in the page's clock (and as
# performance marks, which land in the Chromium trace), Paint/long-task entries kept.
TRACE_JS = """
(() => {
  window.__ws = [];
  window.__longtasks = [];
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        window.__longtasks.push({start: e.startTime, dur: e.duration});
      }
    }).observe({type: "longtask", buffered: true});
  } catch (e) {}
  const Native = window.WebSocket;
  let n = 0;
  class Traced extends Native {
    constructor(...args) {
      super(...args);
      const id = ++n;
      const log = (kind, data) => {
        const text = typeof data === "string" ? data : "";
        const at = performance.now();
        window.__ws.push({id, kind, at, len: text.length, head: text.slice(0, 200)});
        performance.mark(`ws${id}:${kind}:${window.__ws.length}`);
      };
      log("create", String(args[0]));
      this.addEventListener("open", () => log("open"));
      this.addEventListener("message", (e) => log("recv", e.data));
      this.addEventListener("close", () => log("close"));
      const send = Native.prototype.send.bind(this);
      this.send = (data) => {
        log("send", data);
        return send(data);
      };
    }
  }
  window.WebSocket = Traced;
})();
"""

TRACE_CATEGORIES = [
    "toplevel",
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "v8.execute",
    "v8",
    "blink.user_timing",
    "loading",
    "disabled-by-default-v8.cpu_profiler",  # JS samples: which script file the time goes to
]

# Main-thread trace events, by what they spend the time on (self time).
BUCKETS = [
    ("gc", ("GC", "gc", "Sweep", "Mark")),
    ("style/layout", ("UpdateLayoutTree", "Layout", "RecalculateStyles", "ParseAuthorStyleSheet",
                      "InvalidateLayout", "ScheduleStyleRecalculation", "HitTest")),
    ("paint", ("Paint", "PrePaint", "Layerize", "UpdateLayer", "Composite", "Commit", "Raster",
               "Decode", "ImageDecode", "BeginMainThreadFrame", "BeginFrame", "Animation")),
    ("html", ("ParseHTML", "ResourceReceive", "ResourceFinish", "ResourceSendRequest")),
    ("ipc", ("mojo", "SimpleWatcher", "Mojo")),
    ("script", ("v8", "V8", "Evaluate", "FunctionCall", "Microtask", "EventDispatch", "TimerFire",
                "FireAnimationFrame", "Compile", "compile", "Script", "RunMicrotasks",
                "XHR", "MessagePort", "Scheduler", "Callback")),
]  # fmt: skip


def _bucket(name: str) -> str:
    for bucket, words in BUCKETS:
        if any(w in name for w in words):
            return bucket
    return "other"


def _main_thread_slices(
    trace: dict, mark: str
) -> tuple[list[tuple[float, float, str]], float, int]:
    """The renderer main thread's self-time slices (start ms, end ms, bucket), in the page's
    clock, and the offset (trace ms - page ms) — from the performance mark named `mark`."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    mains = {
        (e["pid"], e["tid"])
        for e in events
        if e.get("ph") == "M"
        and e.get("name") == "thread_name"
        and e.get("args", {}).get("name") == "CrRendererMain"
    }
    sync = [e for e in events if e.get("name") == mark and (e["pid"], e["tid"]) in mains]
    if not sync:
        raise RuntimeError(f"mark {mark!r} not in the trace")
    key = (sync[0]["pid"], sync[0]["tid"])
    xs = sorted(
        (e for e in events if (e["pid"], e["tid"]) == key and e.get("ph") == "X" and e.get("dur")),
        key=lambda e: (e["ts"], -e["dur"]),
    )
    # Self time: each event minus its children (events nest on one thread).
    out: list[tuple[float, float, str]] = []
    stack: list[list] = []  # [end, bucket, cursor]

    def close_until(ts: float) -> None:
        while stack and stack[-1][0] <= ts:
            end, bucket, cursor = stack.pop()
            if end > cursor:
                out.append((cursor, end, bucket))
            if stack:
                stack[-1][2] = max(stack[-1][2], end)

    for e in xs:
        ts, end = e["ts"], e["ts"] + e["dur"]
        close_until(ts)
        if stack:
            parent = stack[-1]
            if ts > parent[2]:
                out.append((parent[2], ts, parent[1]))
            parent[2] = max(parent[2], ts)
            end = min(end, parent[0])
        stack.append([end, _bucket(e["name"]), ts])
    close_until(float("inf"))
    return out, sync[0]["ts"], key[0]


def _js_samples(trace: dict, pid: int) -> list[tuple[float, float, str, str]]:
    """The V8 CPU profile of the renderer `pid`: (start µs, end µs, script file, function)."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    profiles: dict[str, dict] = {}
    for e in events:
        if e.get("pid") != pid or e.get("name") not in ("Profile", "ProfileChunk"):
            continue
        prof = profiles.setdefault(e["id"], {"start": None, "nodes": {}, "samples": []})
        data = e.get("args", {}).get("data", {})
        if e["name"] == "Profile":
            prof["start"] = data.get("startTime")
            continue
        cpu = data.get("cpuProfile", {})
        for node in cpu.get("nodes", []):
            frame = node.get("callFrame", {})
            url = frame.get("url", "").rsplit("/", 1)[-1]
            prof["nodes"][node["id"]] = (url, frame.get("functionName") or "(anonymous)")
        prof["samples"] += list(
            zip(cpu.get("samples", []), data.get("timeDeltas", []), strict=False)
        )
    best = max(profiles.values(), key=lambda p: len(p["samples"]), default=None)
    if best is None or best["start"] is None:
        return []
    out, t = [], float(best["start"])
    times = []
    for node, delta in best["samples"]:
        t += delta
        times.append((t, node))
    for (t0, node), (t1, _) in itertools.pairwise(times):
        url, fn = best["nodes"].get(node, ("", "?"))
        out.append((t0, min(t1, t0 + 5000), url, fn))
    return out


def _top_js(samples, a: float, b: float, n: int = 5) -> str:
    by_file: dict[str, float] = {}
    for s, e, url, fn in samples:
        overlap = min(e, b) - max(s, a)
        if overlap > 0 and fn not in ("(idle)", "(root)"):
            key = url or fn  # (program), (garbage collector), native code
            by_file[key] = by_file.get(key, 0.0) + overlap
    top = sorted(by_file.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k.split('-')[0] if k.endswith('.js') else k} {v:.0f}" for k, v in top)


def _busy(slices: list[tuple[float, float, str]], a: float, b: float) -> dict[str, float]:
    busy: dict[str, float] = {}
    for s, e, bucket in slices:
        overlap = min(e, b) - max(s, a)
        if overlap > 0:
            busy[bucket] = busy.get(bucket, 0.0) + overlap
    return busy


def _short(state: str) -> str:
    """reflex___state____state.vgen_app___ui___dashboard____dashboard_state -> dashboard_state"""
    return state.rsplit(".", 1)[-1].rsplit("___", 1)[-1].lstrip("_")


def _frame_label(text: str) -> str:
    """An Engine.IO / Socket.IO frame, in words."""
    if text.startswith("0{"):
        return "engine.io open"
    if text in ("2", "3"):
        return "ping" if text == "2" else "pong"
    kind, _, rest = text[:2], None, text[2:]
    if rest.startswith("/"):  # the namespace: 42/_event,[...]
        rest = rest.partition(",")[2]
    if kind == "40":
        return "socket.io CONNECT" + (" + hydrate_and_load" if "hydrate" in rest else " ack")
    if kind != "42":
        return text[:30]
    try:
        name, body = json.loads(rest)[:2]
    except (ValueError, TypeError):
        return "event (cut)"
    if not isinstance(body, dict):
        return str(name)
    if "delta" in body:
        parts = []
        for state, fields in (body.get("delta") or {}).items():
            keys = [k.removesuffix("_rx_state_") for k in fields]
            if keys == ["is_hydrated"]:
                keys = [f"is_hydrated={json.dumps(next(iter(fields.values())))}"]
            more = f"+{len(keys) - 3}" if len(keys) > 3 else ""
            parts.append(f"{_short(state)}:{','.join(keys[:3])}{more}")
        events = [_short(ev.get("name", "?")) for ev in body.get("events") or []]
        return f"delta {' '.join(parts)}" + (f" events={events}" if events else "")
    if "name" in body:
        return f"event {_short(body['name'])}"
    return str(name)


def trace_visit(
    browser, url: str, selector: str, cookie: str | None, out: Path, tag: str, record: bool
) -> dict:
    """One first visit, profiled (see the module docstring); its breakdown as a dict."""
    context = browser.new_context()
    wire: list[dict] = []
    try:
        if cookie:
            name, _, value = cookie.partition("=")
            origin = "/".join(url.split("/", 3)[:3])
            context.add_cookies([{"name": name, "value": value, "url": origin + "/"}])
        context.add_init_script(WATCH % selector)
        context.add_init_script(TRACE_JS)
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        for kind in ("Sent", "Received"):
            cdp.on(
                f"Network.webSocketFrame{kind}",
                lambda p, kind=kind: wire.append(
                    {"kind": kind, "ts": p["timestamp"], "data": p["response"]["payloadData"]}
                ),
            )
        for event, kind in (("WillSendHandshakeRequest", "upgrade"),
                            ("HandshakeResponseReceived", "handshake")):  # fmt: skip
            cdp.on(
                f"Network.webSocket{event}",
                lambda p, kind=kind: wire.append(
                    {"kind": kind, "ts": p["timestamp"], "wall": p.get("wallTime"), "data": ""}
                ),
            )
        trace_path = out / f"{tag}.trace.json"
        if record:
            browser.start_tracing(page=page, path=trace_path, screenshots=False,
                                  categories=TRACE_CATEGORIES)  # fmt: skip
        try:
            page.goto(url, wait_until="commit")
            page.wait_for_function("window.__usableAt !== undefined", timeout=60_000)
            page.wait_for_timeout(500)  # what follows the usable moment
            got = page.evaluate(
                """() => ({
                    usable: window.__usableAt,
                    nav: performance.getEntriesByType("navigation")[0].toJSON(),
                    resources: performance.getEntriesByType("resource").map((r) => r.toJSON()),
                    paint: performance.getEntriesByType("paint").map((p) => p.toJSON()),
                    ws: window.__ws,
                    longtasks: window.__longtasks,
                    timeOrigin: performance.timeOrigin,
                })"""
            )
        finally:
            if record:
                browser.stop_tracing()
    finally:
        context.close()
    # The wire's clock (CDP monotonic seconds) in the page's: through the handshake's wall time.
    anchor = next((w for w in wire if w.get("wall")), None)
    for w in wire:
        w["at"] = (
            None
            if anchor is None
            else anchor["wall"] * 1000 - got["timeOrigin"] + (w["ts"] - anchor["ts"]) * 1000
        )
    got["wire"] = wire
    slices: list[tuple[float, float, str]] = []
    samples: list[tuple[float, float, str, str]] = []
    if record and got["ws"]:
        first_mark = f"ws{got['ws'][0]['id']}:{got['ws'][0]['kind']}:1"
        trace = json.loads(trace_path.read_text())
        slices, sync_ts, pid = _main_thread_slices(trace, first_mark)
        offset = sync_ts / 1000 - got["ws"][0]["at"]  # trace ms = page ms + offset
        slices = [(s / 1000 - offset, e / 1000 - offset, b) for s, e, b in slices]
        samples = [
            (s / 1000 - offset, e / 1000 - offset, url, fn)
            for s, e, url, fn in _js_samples(trace, pid)
        ]
    if record:
        (out / f"{tag}.json").write_text(json.dumps(got, indent=1))
    return {"got": got, "slices": slices, "samples": samples}


def breakdown(name: str, visit: dict) -> list[tuple[str, float]]:
    """Print the page's milestones with the main thread's busy time since the previous one."""
    got, slices = visit["got"], visit["slices"]
    nav = got["nav"]
    js = [r for r in got["resources"] if r["initiatorType"] in ("script", "link", "other")
          and r["name"].split("?")[0].endswith((".js", ".mjs"))]  # fmt: skip
    css = [r for r in got["resources"] if r["name"].split("?")[0].endswith(".css")]
    fcp = next(
        (p["startTime"] for p in got["paint"] if p["name"] == "first-contentful-paint"), None
    )
    steps: list[tuple[str, float]] = [
        ("HTML response start (TTFB)", nav["responseStart"]),
        ("HTML response end", nav["responseEnd"]),
    ]
    if js:
        kib = sum(r["encodedBodySize"] for r in js) / 1024
        label = f"last of {len(js)} JS files loaded ({kib:.0f} KiB on the wire)"
        steps.append((label, max(r["responseEnd"] for r in js)))
    if css:
        steps.append((f"last of {len(css)} CSS files loaded", max(r["responseEnd"] for r in css)))
    steps += [
        ("DOMContentLoaded (module scripts run)", nav["domContentLoadedEventEnd"]),
    ]
    if fcp is not None:
        steps.append(("first contentful paint", fcp))
    wire = got["wire"]
    wire_sent = [w for w in wire if w["kind"] == "Sent"]
    wire_recv = [w for w in wire if w["kind"] == "Received"]
    ws_ids = sorted({w["id"] for w in got["ws"]})
    for w in got["ws"]:
        label = {
            "create": "JS evaluated: WebSocket created"
            + (f" (#{w['id']})" if len(ws_ids) > 1 else ""),
            "open": "socket open (transport)"
            + "".join(
                f" [{x['kind']} {x['at']:.0f}]"
                for x in wire
                if x["kind"] in ("upgrade", "handshake")
            ),
            "close": "socket closed",
        }.get(w["kind"])
        if label is None:
            sends = w["kind"] == "send"
            frames = wire_sent if sends else wire_recv
            match = next((x for x in frames if x["data"][:200] == w["head"]), None)
            if match is not None:
                frames.remove(match)
            frame = _frame_label(match["data"] if match is not None else w["head"])
            if frame in ("ping", "pong"):
                continue
            label = f"{'sends' if sends else 'gets'} {frame} ({w['len']} B)"
            if match is not None and match.get("at") is not None:
                label += f" [wire {match['at']:.0f}]"
        steps.append((label, w["at"]))
    steps.append(("USABLE (element in the DOM)", got["usable"]))
    steps.sort(key=lambda s: s[1])
    print(f"\n  {name}  (trace: usable at {got['usable']:.0f} ms)")
    print(
        f"    {'ms':>6}  {'+ms':>5}  {'main thread busy since previous (self ms by kind)':<52}  milestone"
    )
    prev = 0.0
    total: dict[str, float] = {}
    for label, at in steps:
        busy = _busy(slices, prev, at)
        for k, v in busy.items():
            if at <= got["usable"]:
                total[k] = total.get(k, 0.0) + v
        b = sum(busy.values())
        kinds = " ".join(
            f"{k}={v:.0f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1]) if v >= 1
        )
        print(f"    {at:6.0f}  {at - prev:5.0f}  {b:5.0f} {kinds:<46}  {label}")
        prev = max(prev, at)
    tb = sum(total.values())
    kinds = " ".join(f"{k}={v:.0f}" for k, v in sorted(total.items(), key=lambda kv: -kv[1]))
    print(f"    main thread busy until usable: {tb:.0f} ms of {got['usable']:.0f} ({kinds})")
    m = milestones(got)
    samples = visit.get("samples") or []
    if samples:
        windows = [
            ("navigation -> DOMContentLoaded", 0.0, m.get("DOMContentLoaded")),
            ("DOMContentLoaded -> hydrate sent", m.get("DOMContentLoaded"),
             m.get("CONNECT+hydrate sent")),
            ("hydrate sent -> data delta", m.get("CONNECT+hydrate sent"),
             m.get("data delta (last before usable)")),
            ("data delta -> USABLE", m.get("data delta (last before usable)"), m.get("USABLE")),
        ]  # fmt: skip
        print("    JS samples (V8 CPU profile, ms) by script file:")
        for label, a, b in windows:
            if a is not None and b is not None:
                print(f"      {label:<34} {_top_js(samples, a, b)}")
    lts = [lt for lt in got["longtasks"] if lt["start"] < got["usable"]]
    if lts:
        print(
            "    long tasks before usable: "
            + ", ".join(f"{lt['start']:.0f}+{lt['dur']:.0f}" for lt in lts)
        )
    return steps


def milestones(got: dict) -> dict[str, float]:
    """The visit's milestones (ms since navigation start, in the page; w ...: on the wire)."""
    nav, usable = got["nav"], got["usable"]
    m = {"TTFB": nav["responseStart"], "HTML loaded": nav["responseEnd"]}
    js = [r["responseEnd"] for r in got["resources"] if r["name"].split("?")[0].endswith(".js")]
    m["JS loaded (before usable)"] = max((t for t in js if t <= usable), default=float("nan"))
    m["DOMContentLoaded"] = nav["domContentLoadedEventEnd"]
    wire = {k: [w for w in got["wire"] if w["kind"] == k] for k in ("Sent", "Received")}
    first: dict[str, dict] = {}
    last_delta = None
    for w in got["ws"]:
        key = None
        if w["kind"] in ("create", "open"):
            key = {"create": "WebSocket created", "open": "socket open"}[w["kind"]]
        elif w["kind"] in ("send", "recv"):
            frames = wire["Sent" if w["kind"] == "send" else "Received"]
            match = next((x for x in frames if x["data"][:200] == w["head"]), None)
            if match is not None:
                frames.remove(match)
            label = _frame_label(match["data"] if match else w["head"])
            w = {**w, "wire": match["at"] if match else None}
            if label.startswith("socket.io CONNECT +"):
                key = "CONNECT+hydrate sent"
            elif label.startswith("socket.io CONNECT ack"):
                key = "CONNECT ack"
            elif label.startswith("delta") and "CONNECT ack" in first:
                key = "first delta (snapshot)"
                if w["at"] <= usable:
                    last_delta = w
                if "is_hydrated=true" in label:
                    key = "is_hydrated=true"
            elif label == "event follow":
                key = "follow sent"
        if key is not None and key not in first:
            first[key] = w
    for key, w in first.items():
        m[key] = w["at"]
        if w.get("wire") is not None:
            m[f"w {key}"] = w["wire"]
    if last_delta is not None:
        m["data delta (last before usable)"] = last_delta["at"]
        if last_delta.get("wire") is not None:
            m["w data delta (last before usable)"] = last_delta["wire"]
    m["USABLE"] = usable
    fcp = [p["startTime"] for p in got["paint"] if p["name"] == "first-contentful-paint"]
    m["first contentful paint"] = fcp[0] if fcp else float("nan")
    return m


ORDER = [
    "TTFB", "HTML loaded", "DOMContentLoaded", "WebSocket created", "socket open",
    "CONNECT+hydrate sent", "w CONNECT+hydrate sent", "w CONNECT ack", "CONNECT ack",
    "w first delta (snapshot)", "first delta (snapshot)", "w data delta (last before usable)",
    "data delta (last before usable)", "follow sent", "USABLE", "w is_hydrated=true",
    "is_hydrated=true", "JS loaded (before usable)", "first contentful paint",
]  # fmt: skip

PHASES = [
    ("navigation -> DOMContentLoaded (HTML, JS, CSS, module eval)", None, "DOMContentLoaded"),
    ("DOMContentLoaded -> hydrate sent (React hydrates, mounts)", "DOMContentLoaded",
     "CONNECT+hydrate sent"),
    ("hydrate sent -> data delta, on the wire (server + loopback)", "w CONNECT+hydrate sent",
     "w data delta (last before usable)"),
    ("  of which CONNECT -> ack (socket.io connect handler)", "w CONNECT+hydrate sent",
     "w CONNECT ack"),
    ("  of which ack -> data delta (hydrate + on_load chain)", "w CONNECT ack",
     "w data delta (last before usable)"),
    ("data delta: wire -> page (main thread busy)", "w data delta (last before usable)",
     "data delta (last before usable)"),
    ("data delta -> USABLE (React renders the data)", "data delta (last before usable)",
     "USABLE"),
]  # fmt: skip


def run_traces(browser, pages, out: Path, reps: int) -> list[tuple[str, list[dict]]]:
    out.mkdir(parents=True, exist_ok=True)
    visits: dict[str, list[dict]] = {name: [] for name, *_ in pages}
    for r in range(reps):  # the first round traced, all rounds timed (interleaved)
        for name, url, sel, ck in pages if r % 2 == 0 else list(reversed(pages)):
            tag = "".join(c if c.isalnum() else "_" for c in name).strip("_")[:40]
            visits[name].append(trace_visit(browser, url, sel, ck, out, tag, record=r == 0))
    return list(visits.items())


def print_traces(visits: list[tuple[str, list[dict]]], out: Path) -> None:
    names = [name for name, _ in visits]
    untraced = {name: [milestones(v["got"]) for v in (vs[1:] or vs)] for name, vs in visits}
    n = min(len(ms) for ms in untraced.values())
    print(
        f"\nmilestones, median of {n} instrumented (untraced) first visits, ms since navigation"
        f" start (w = the frame on the wire, CDP; else when the page's main thread saw it):"
    )
    print(f"  {'':<34}" + "".join(f"{name[:16]:>17}" for name in names))
    for key in ORDER:
        cells = ""
        for name in names:
            xs = [m[key] for m in untraced[name] if key in m and m[key] == m[key]]
            cells += f"{statistics.median(xs) if xs else float('nan'):17.0f}"
        print(f"  {key:<34}{cells}")
    print("\nphases (medians of the per-visit differences, ms):")
    print(f"  {'':<62}" + "".join(f"{name[:12]:>13}" for name in names))
    for label, a, b in PHASES:
        cells = ""
        for name in names:
            ds = [
                m[b] - (m[a] if a else 0.0)
                for m in untraced[name]
                if b in m and (a is None or a in m)
            ]
            cells += f"{statistics.median(ds) if ds else float('nan'):13.0f}"
        print(f"  {label:<62}{cells}")
    print(
        f"\nprofiled first visits (the traced round; tracing slows the page; files in {out}). ms:"
        f" since navigation start, in the page; [wire N]: the frame on the network (CDP); busy:"
        f" renderer main thread self time since the previous line:"
    )
    for name, vs in visits:
        breakdown(name, vs[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--trace", type=Path, metavar="DIR", help="also profile visits of each page")
    ap.add_argument("--trace-reps", type=int, default=7, help="--trace: visits per page (1 traced)")
    args = ap.parse_args()
    assert 1 <= args.reps <= 30
    assert 1 <= args.trace_reps <= 30
    import logging

    from playwright.sync_api import sync_playwright

    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="vgen-bench-usable-"))
    server = AppServer(work / "app")
    blank = BlankServer(work)
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPU, load avg "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
    )
    try:
        server.start()
        print(f"app answered after {server.startup_s:.0f} s at {server.url}")
        use_app_settings(server)
        cookie, task_id = seed()
        t0 = time.monotonic()
        blank.start()
        print(f"blank Reflex app answered after {time.monotonic() - t0:.0f} s at {blank.url}")
        pages = [
            ("blank Reflex page /", blank.url + "/", "#ready:not([disabled])", None),
            ("/ (My tasks)", server.url + "/", '#tasks-table a[href^="/tasks/"]', cookie),
            ("/tasks/{id}", f"{server.url}/tasks/{task_id}", "#runs [id^=run-]", cookie),
            ("/tokens", server.url + "/tokens", "#history tbody tr", cookie),
        ]
        times: dict[str, list[float]] = {name: [] for name, *_ in pages}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
            for name, url, sel, ck in pages:  # warm-up: server caches, the OS page cache
                measure(browser, url, sel, ck)
            for r in range(args.reps):
                for name, url, sel, ck in pages if r % 2 == 0 else list(reversed(pages)):
                    times[name].append(measure(browser, url, sel, ck))
            visits = (
                run_traces(browser, pages, args.trace, args.trace_reps)
                if args.trace is not None
                else []
            )
            browser.close()
        floor = statistics.median(times[pages[0][0]])
        print(f"\ntime to usable, median of {args.reps} first visits (ms from navigation start):")
        for name, *_ in pages:
            med = statistics.median(times[name])
            runs = ", ".join(f"{t:.0f}" for t in times[name])
            ratio = med / floor
            verdict = (
                ""
                if name == pages[0][0]
                else (f"  {ratio:.2f}x  (<= {TARGET}x: {'HOLDS' if ratio <= TARGET else 'MISSED'})")
            )
            print(f"  {name:<22} {med:7.0f} ms  [{runs}]{verdict}")
        if visits:
            print_traces(visits, args.trace)
    except BaseException:
        print("app log tail:", server.log_tail(60))
        raise
    finally:
        blank.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
