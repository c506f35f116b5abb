"""Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`):
no websocket, no extra Python package, nothing reached over the network.

Chromium reads commands on its file descriptor 3 and writes answers and events on 4, each
a JSON message ended by a NUL byte.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> tuple[str | None, str]:
    """The Chromium binary, installed with apt-get when CI=true or SEGLAB_INSTALL_CHROMIUM=1
    asks for it; else (None, why)."""
    found = next((shutil.which(name) for name in BINARIES if shutil.which(name)), None)
    if found:
        return found, ""
    if os.environ.get("CI") != "true" and os.environ.get("SEGLAB_INSTALL_CHROMIUM") != "1":
        return None, (
            "no chromium binary; install Debian's `chromium` (apt-get install "
            "chromium), or set SEGLAB_INSTALL_CHROMIUM=1 to let the test install it"
        )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(command, env=environment, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=900)  # fmt: skip
        if result.returncode != 0:
            return None, f"`{' '.join(command)}` failed: {result.stderr.strip()[-300:]}"
    found = shutil.which("chromium")
    return found, "" if found else "apt-get installed chromium but no binary is on PATH"


_FIGURES_JS = """Array.from(document.querySelectorAll('figure')).map(f => ({
  id: f.id,
  caption: f.querySelector('figcaption').innerText,
  corrections: Array.from(f.querySelectorAll('figcaption p.correction')).map(p => ({
    text: p.innerText,
    quotes: Array.from(p.querySelectorAll('q[lang=pt]')).map(q => q.textContent),
    height: p.getBoundingClientRect().height})),
  image: {width: f.querySelector('img').naturalWidth,
          height: f.querySelector('img').naturalHeight}}))"""


@dataclass
class PageReport:
    """What loading a page gave."""

    images: list[dict]  # per <img>: complete, naturalWidth, naturalHeight, src (start)
    errors: list[str]  # console errors, uncaught exceptions, browser log errors
    requests: list[str]  # every URL the page requested
    screenshot: bytes = field(repr=False)  # full-page PNG
    # per <figure>: id, caption (rendered text), corrections (per p.correction: its rendered
    # text, its Portuguese quotes, its height in px), image (naturalWidth, naturalHeight)
    figures: list[dict] = field(default_factory=list)


class Chromium:
    """One headless Chromium process and a DevTools session on one page."""

    def __init__(self, binary: str, profile: Path, width: int = 1100) -> None:
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def connect_pipes() -> None:  # in the child: the DevTools pipe on fds 3 and 4
            # out of the way first: either pipe end may itself be fd 3 or 4
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, answers_write)]
            for target, fd in zip((3, 4), high, strict=True):
                os.dup2(fd, target)
                os.set_inheritable(target, True)

        self.process = subprocess.Popen(
            [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--metrics-recording-only", f"--user-data-dir={profile}",
             f"--window-size={width},900", "about:blank"],
            preexec_fn=connect_pipes, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(commands_read)
        os.close(answers_write)
        self.width = width
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, TimeoutError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._commands)
        os.close(self._answers)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:  # fmt: skip
        """Send a command and wait for its answer (events seen meanwhile are kept)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise OSError("chromium closed its DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def load(self, page: Path) -> PageReport:
        """Open `page`, wait for its load event, inspect its images, screenshot it whole."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        self.wait_for("Page.loadEventFired", timeout=60)
        images = self.send("Runtime.evaluate", {
            "expression": "Array.from(document.images).map(i => ({complete: i.complete, "
            "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, "
            "src: i.src.slice(0, 30)}))",
            "returnByValue": True,
        }, session=session)["result"]["value"]  # fmt: skip
        figures = self.send("Runtime.evaluate", {"expression": _FIGURES_JS, "returnByValue": True},
                            session=session)["result"]["value"]  # fmt: skip
        height = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width,
                  "height": int(height), "deviceScaleFactor": 1, "mobile": False},
                  session=session)  # fmt: skip
        shot = self.send("Page.captureScreenshot", {"format": "png",
                         "captureBeyondViewport": True}, session=session)  # fmt: skip
        return PageReport(images, self._errors(), self._requests(),
                          base64.b64decode(shot["data"]), figures)  # fmt: skip

    def _errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                errors.append(f"console: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                errors.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                errors.append(f"log: {params['entry'].get('text')}")
        return errors

    def _requests(self) -> list[str]:
        return [event["params"]["request"]["url"] for event in self.events
                if event.get("method") == "Network.requestWillBeSent"]  # fmt: skip
