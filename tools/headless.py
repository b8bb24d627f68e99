"""Drive a headless Chromium through the Chrome DevTools Protocol, offline.

A small client on top of ``websocket-client`` (no browser download, no Node): it starts the
system's ``chromium`` with a private profile, serves a built book from ``127.0.0.1``, blocks
every request that leaves the site, and records what a page did (console errors, uncaught
exceptions, failed or blocked requests). Used by ``tests/test_browser.py`` and
``tools/book_pdf.py``.

Example
-------
>>> with serve(Path("_build/html")) as base, Chromium() as browser:  # doctest: +SKIP
...     visit = browser.open(base + "/book/index.html")
...     print(visit.errors, visit.blocked)
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import websocket

LOCAL_HOSTS = ("127.0.0.1", "localhost")

# Resolves once MathJax has typeset the page (true), or at once where the page has no MathJax.
WAIT_FOR_MATHJAX = """
(window.MathJax && MathJax.startup && MathJax.startup.promise)
    ? MathJax.startup.promise.then(() => true) : Promise.resolve(false)
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``$CHROMIUM`` first), or ``None``."""
    candidates = [os.environ.get("CHROMIUM", "")]
    candidates += ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
    for name in candidates:
        if name and (path := shutil.which(name)):
            return path
    return None


def is_local(url: str) -> bool:
    """Whether a request for ``url`` stays on this machine (the served site, data:, blob:...)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https", "ws", "wss"):
        return parts.hostname in LOCAL_HOSTS
    return True


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the test reports failures itself
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on a free local port; yields the base URL (no slash)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Visit:
    """What happened while a page loaded.

    ``errors``: console errors, uncaught exceptions and failed local requests, as text.
    ``blocked``: URLs outside the site that the page tried to fetch (all were refused).
    """

    url: str
    errors: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)


class Chromium:
    """A headless Chromium with one tab, controlled over CDP; use as a context manager.

    Parameters
    ----------
    executable
        Browser binary; default: :func:`find_chromium`.
    width, height
        Viewport in CSS pixels (screenshots have this size).
    timeout
        Seconds to wait for the browser to start and for each page to load.
    """

    def __init__(
        self,
        executable: str | None = None,
        width: int = 1280,
        height: int = 900,
        timeout: float = 60.0,
    ):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise FileNotFoundError("no chromium executable found (install Debian's `chromium`)")
        self.width, self.height, self.timeout = width, height, timeout
        self._ids = itertools.count(1)
        self._events: list[dict] = []
        self._visit: Visit | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Chromium:
        # Chromium's helper processes may still write to the profile as it shuts down.
        self._profile = tempfile.TemporaryDirectory(
            prefix="kdlib-chromium-", ignore_cleanup_errors=True
        )
        args = [
            self.executable,
            "--headless=new",
            "--no-sandbox",  # runs as root in containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--metrics-recording-only",
            "--hide-scrollbars",
            "--mute-audio",
            # Second line of defence: outside hosts do not even resolve.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
            f"--window-size={self.width},{self.height}",
            f"--user-data-dir={self._profile.name}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self._connect()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        with contextlib.suppress(Exception):
            self._session = None
            self._ws.send(json.dumps({"id": next(self._ids), "method": "Browser.close"}))
            self._proc.wait(10)
        with contextlib.suppress(Exception):
            self._ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._profile.cleanup()

    def _connect(self) -> None:
        port_file = Path(self._profile.name) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port, browser_path = port_file.read_text().splitlines()[:2]
        self._ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}{browser_path}", timeout=self.timeout, suppress_origin=True
        )
        self._session = None
        targets = self.send("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        attached = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        self._session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        self.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )

    # -- protocol ---------------------------------------------------------------------------

    def send(self, method: str, **params) -> dict:
        """Call a CDP method on the tab and return its result (events that arrive meanwhile
        are handled: blocked requests answered, errors recorded)."""
        msg_id = next(self._ids)
        message = {"id": msg_id, "method": method, "params": params}
        if self._session is not None:
            message["sessionId"] = self._session
        self._ws.send(json.dumps(message))
        while True:
            reply = self._receive(self.timeout)
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self, timeout: float) -> dict:
        self._ws.settimeout(timeout)
        reply = json.loads(self._ws.recv())
        if "method" in reply:
            self._handle(reply)
        return reply

    def _pump(self, seconds: float) -> None:
        """Handle events for ``seconds`` (late requests, console messages)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._receive(left)
            except websocket.WebSocketTimeoutException:
                return

    def _handle(self, event: dict) -> None:
        method, params = event["method"], event.get("params", {})
        visit = self._visit
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if is_local(url):
                self._reply("Fetch.continueRequest", requestId=params["requestId"])
            else:
                if visit is not None:
                    visit.blocked.append(url)
                self._reply(
                    "Fetch.failRequest",
                    requestId=params["requestId"],
                    errorReason="BlockedByClient",
                )
            return
        self._events.append(event)
        if visit is None:
            return
        if method == "Network.requestWillBeSent":
            visit.requested.append(params["request"]["url"])
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            visit.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            visit.errors.append(f"uncaught exception: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            if not any(url in entry.get("url", "~") for url in visit.blocked):
                visit.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            response = params["response"]
            visit.errors.append(f"HTTP {response['status']} for {response['url']}")

    def _reply(self, method: str, **params) -> None:
        # Answer a paused request without waiting for the reply (keeps event handling flat).
        message = {"id": next(self._ids), "method": method, "params": params}
        message["sessionId"] = self._session
        self._ws.send(json.dumps(message))

    # -- pages ------------------------------------------------------------------------------

    def open(self, url: str, settle: float = 0.3) -> Visit:
        """Load ``url``, wait for the load event and for MathJax, then for late requests."""
        self._visit = visit = Visit(url)
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            visit.errors.append(f"navigation failed: {result['errorText']}")
            return visit
        deadline = time.monotonic() + self.timeout
        done = ("Page.loadEventFired", "Page.navigatedWithinDocument")  # the latter: #fragment
        while not any(e["method"] in done for e in self._events):
            left = deadline - time.monotonic()
            if left <= 0:
                visit.errors.append("timeout waiting for the load event")
                return visit
            try:
                self._receive(left)
            except websocket.WebSocketTimeoutException:
                continue
        self.evaluate(WAIT_FOR_MATHJAX)
        self._pump(settle)
        return visit

    def evaluate(self, expression: str):
        """Value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save the visible part of the page as a PNG."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def pdf(self, **options) -> bytes:
        """The page printed to PDF (CDP ``Page.printToPDF`` options, e.g. ``printBackground``)."""
        return base64.b64decode(self.send("Page.printToPDF", **options)["data"])
