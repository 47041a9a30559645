"""Issue O: a browser that loses the network for 10 s while it watches a run, in both app shapes.
The run finishes while the tab is offline; when the network is back the page shows the final
status by itself — no reload (a marker set on `window` before going offline is still there).

`context.set_offline(True)` fails the tab's HTTP requests but leaves open WebSockets working
(microsoft/playwright#4910): the page's socket is routed through Playwright (`route_web_socket`),
and going offline also closes it and refuses new ones until the network is back."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import urlsplit

import pytest
from journey_helpers import buy_10k, create_task, login_ok, new_member, upload_lipsync_inputs
from playwright.sync_api import expect

from tests.fakes.media_samples import make_audio, make_video

pytestmark = pytest.mark.browser
OFFLINE_S = 10.0
FINAL = ("succeeded", "failed")
PASSWORD = "correct horse battery"


class Network:
    """The tab's network: the context talks to the app through this HTTP proxy (the WebSocket
    as a CONNECT tunnel), so it can be cut — open connections reset, new ones refused — while
    `set_offline` fails the tab's HTTP requests."""

    def __init__(self) -> None:
        self.online = True
        self.loop = asyncio.new_event_loop()
        self.open: set[asyncio.StreamWriter] = set()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def proxy(self) -> dict[str, str]:
        # "<-loopback>": Chromium sends even localhost through the proxy.
        return {"server": f"http://127.0.0.1:{self.port}", "bypass": "<-loopback>"}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.online:
            writer.transport.abort()
            return
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.transport.abort()
            return
        line, _, rest = head.partition(b"\r\n")
        method, target, version = line.split(b" ", 2)
        if method == b"CONNECT":
            host, _, port = target.decode().rpartition(":")
            first = b""
        else:  # an absolute URL: asked of the app in origin form, one request per connection
            url = urlsplit(target.decode())
            host, port = url.hostname or "", str(url.port or 80)
            path = (url.path or "/") + (f"?{url.query}" if url.query else "")
            headers = [
                h
                for h in rest.split(b"\r\n")
                if h and not h.lower().startswith((b"connection:", b"proxy-connection:"))
            ]
            first = b"\r\n".join(
                [b" ".join([method, path.encode(), version]), *headers, b"Connection: close"]
            )
            first += b"\r\n\r\n"
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.transport.abort()
            return
        if method == b"CONNECT":
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        else:
            up_writer.write(first)
        self.open.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.open.difference_update((writer, up_writer))

    def _cut(self) -> None:
        for writer in list(self.open):
            writer.transport.abort()  # a reset, as when the network goes
        self.open.clear()

    def down(self, context) -> None:
        self.online = False
        context.set_offline(True)
        self.loop.call_soon_threadsafe(self._cut)

    def up(self, context) -> None:
        self.online = True
        context.set_offline(False)

    def close(self) -> None:
        self.online = False
        self.loop.call_soon_threadsafe(self._cut)
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_tab_offline_for_10_s_shows_the_run_finished_meanwhile_without_a_reload(
    app_server, new_context, shots, tmp_path, figure, request
) -> None:
    video = make_video(tmp_path / "speaker.mp4", seconds=2, size="320x240")
    audio = make_audio(tmp_path / "voice.m4a", seconds=2)
    network = Network()
    request.addfinalizer(network.close)
    context = new_context(proxy=network.proxy())
    page = context.new_page()
    email = new_member(page, app_server, PASSWORD)
    buy_10k(page)
    task_path = create_task(page, "Offline watch")
    upload_lipsync_inputs(page, video, audio)
    # The same account on another device, which stays online: it sees when the run is done.
    other = new_context().new_page()
    login_ok(other, app_server.url, email, PASSWORD)
    other.goto(task_path)
    expect(other.locator("#task-name")).to_have_text("Offline watch")
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))

    page.click("#run-button")
    row = page.locator("#run-1")
    expect(row).to_be_visible()
    assert row.get_attribute("data-status") not in FINAL  # watched while it runs (3 s simulator)
    page.evaluate("window.__vgenOfflineMarker = 'set before going offline'")

    network.down(context)
    went_offline = time.monotonic()
    status_offline = row.get_attribute("data-status")
    notice = page.locator("#connection-lost")
    expect(notice).to_be_visible(timeout=OFFLINE_S * 1000)  # the socket is really gone
    noticed_s = time.monotonic() - went_offline
    # The run finishes meanwhile: the other device shows it.
    expect(other.locator("#run-1")).to_have_attribute(
        "data-status", "succeeded", timeout=OFFLINE_S * 1000
    )
    finished_s = time.monotonic() - went_offline
    page.wait_for_timeout(max(0.0, OFFLINE_S - (time.monotonic() - went_offline)) * 1000)
    assert row.get_attribute("data-status") not in FINAL  # nothing reached this tab meanwhile
    shots(page, "offline")
    network.up(context)
    back = time.monotonic()

    expect(row).to_have_attribute("data-status", "succeeded", timeout=30_000)
    shown_s = time.monotonic() - back
    expect(page.locator("#download-1")).to_be_visible()
    expect(notice).to_have_count(0, timeout=30_000)
    expect(page.locator("#header-email")).to_have_text(email)
    assert page.evaluate("window.__vgenOfflineMarker") == "set before going offline"
    assert loads == [], loads  # no page load happened: no reload
    shots(page, "back-online")
    figure(
        f"{request.node.callspec.params['app_server']}: tab offline {OFFLINE_S:.0f} s while watching a run (status"
        f" {status_offline!r} when it went; the page said so after {noticed_s:.1f} s; the run"
        f" finished {finished_s:.1f} s into it, seen on another device); back online → the page"
        f" showed 'succeeded' {shown_s:.1f} s later, 0 reloads (window marker kept), still"
        " signed in"
    )
