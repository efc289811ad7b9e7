"""Headless Chromium driven over the DevTools protocol (``--remote-debugging-pipe``), for
the browser tests (the web-dashboard example and the gateway's dashboard).

No WebDriver, no extra Python package: the Debian ``chromium`` package and a pipe. Every
wait is bounded (30 s per DevTools answer); nothing polls or sleeps.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DevTools", "find_chromium", "headless_chromium", "require_chromium", "stopping"]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("AIOTMC_CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def _high_pipe() -> tuple[int, int]:
    """``os.pipe()``, moved to fds >= 10."""
    pair = os.pipe()
    moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in pair)
    for fd in pair:
        os.close(fd)
    return moved  # type: ignore[return-value]


def require_chromium() -> str:
    """Chromium's path; skipped when it is missing, except with ``CI=true`` (a failure)."""
    chromium = find_chromium()
    if chromium is None:
        message = "Chromium is not installed (Debian package chromium; scripts/test.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must run the browser test")
        pytest.skip(message)
    return chromium


@contextmanager
def stopping(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> Iterator[None]:
    """End ``proc`` on the way out: ``sig``, a bounded wait, then SIGKILL."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class DevTools:
    """Chrome DevTools Protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, to_browser: int, from_browser: int, log: Path) -> None:
        self._out = to_browser
        self._in = from_browser
        self._log = log
        self._buffer = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._in], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"no {what} within the deadline")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                tail = self._log.read_text(errors="replace")[-3000:]
                raise EOFError(f"the browser closed the DevTools pipe; its log:\n{tail}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(raw)  # type: ignore[no-any-return]

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None
    ) -> dict[str, Any]:
        """Send a command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        while True:
            reply = self._receive(deadline, f"answer to {method}")
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]  # type: ignore[no-any-return]
            if "method" in reply:
                self._events.append(reply)

    def wait_event(self, method: str, *, session: str) -> dict[str, Any]:
        """The next event ``method`` of ``session`` (one that already arrived counts)."""
        deadline = time.monotonic() + 30
        while True:
            for event in self._events:
                if event["method"] == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event
            self._events.append(self._receive(deadline, f"{method} event"))

    def evaluate(self, expression: str, *, session: str) -> Any:
        """Evaluate JavaScript in the page (awaiting a promise) and return its value."""
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        reply = self.call("Runtime.evaluate", params, session=session)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"JavaScript failed: {reply['exceptionDetails']}")
        return reply["result"].get("value")


# Resolves once the page shows live data: a few readings, filled-in values, an SRQ in the
# log and a chart with a trace. Event-driven (MutationObserver), no polling or sleeps.
@contextmanager
def headless_chromium(chromium: str, workdir: Path) -> Iterator[DevTools]:
    """Headless Chromium with a fresh profile, driven over ``--remote-debugging-pipe``."""
    # The DevTools pipe must be fds 3 and 4 in the browser; bash puts them there, from
    # fds >= 10 so that neither redirection can clobber the other's source.
    to_browser_r, to_browser_w = _high_pipe()
    from_browser_r, from_browser_w = _high_pipe()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={workdir / 'profile'}",
        "--window-size=1280,900",
        "--remote-debugging-pipe",
        "about:blank",
    ]
    log = workdir / "chromium.log"
    try:
        with (
            log.open("wb") as log_file,
            subprocess.Popen(
                [
                    "/bin/bash",  # dash cannot redirect from fds >= 10
                    "-c",
                    f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}',
                    chromium,
                    *flags,
                ],
                pass_fds=(to_browser_r, from_browser_w),
                stdout=log_file,
                stderr=log_file,
            ) as browser,
            stopping(browser),
        ):
            os.close(to_browser_r)
            os.close(from_browser_w)
            to_browser_r = from_browser_w = -1
            cdp = DevTools(to_browser_w, from_browser_r, log)
            yield cdp
            try:
                cdp.call("Browser.close")
            except EOFError:
                pass  # it may close the pipe before answering
            browser.wait(timeout=10)
    finally:
        for fd in (to_browser_r, to_browser_w, from_browser_r, from_browser_w):
            if fd >= 0:
                os.close(fd)
