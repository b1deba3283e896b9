"""Headless Chromium driven over the Chrome DevTools Protocol, for tests that look at a page.

Why not `chromium --dump-dom`: a live page (server-sent events) never finishes loading, and a
test wants to wait for what it checks to appear, while the page stays connected. This starts
the system's `chromium` with a DevTools port, opens one page, and gives `navigate`, `evaluate`
(a JavaScript expression's value), `wait_for` (until an expression is truthy) and `screenshot`
(a PNG of the whole page). Uses aiohttp's WebSocket client (in the test extra).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from polling import poll_until

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The path of an installed Chromium (or Chrome), None when there is none."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class CdpError(RuntimeError):
    pass


class Chromium:
    """One headless browser with one page; `async with Chromium() as page: ...`."""

    def __init__(
        self, executable: str | None = None, width: int = 1500, height: int = 1200
    ) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise CdpError("no chromium found")
        self.width, self.height = width, height
        #: how long one DevTools command may take (a loaded machine slows the page down)
        self.timeout_s = 90.0
        self._profile = tempfile.TemporaryDirectory(prefix="cdp-", ignore_cleanup_errors=True)
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        #: console messages and uncaught exceptions of the page, for failure messages
        self.console: list[str] = []

    async def __aenter__(self) -> Chromium:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, wait_s: float = 30.0) -> None:
        assert self.executable is not None
        profile = Path(self._profile.name)
        self._proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once; waited for below)
            [
                self.executable,
                "--headless=new",
                "--no-sandbox",  # tests run as root in containers
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes share the group: close stops them all
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + wait_s
        while not port_file.exists() or not port_file.read_text().strip():
            if self._proc.poll() is not None:
                raise CdpError(f"chromium exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise CdpError("chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t.get("type") == "page")
        self._ws = await self._session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._dispatch(json.loads(msg.data))
        finally:  # the browser went away: nobody waits forever for an answer
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CdpError(f"DevTools connection closed; {self.console[-5:]}"))

    def _dispatch(self, data: dict[str, Any]) -> None:
        if "id" in data:
            fut = self._pending.pop(data["id"], None)
            if fut is not None and not fut.done():
                if "error" in data:
                    fut.set_exception(CdpError(str(data["error"])))
                else:
                    fut.set_result(data.get("result", {}))
        elif data.get("method") == "Runtime.consoleAPICalled":
            args = data.get("params", {}).get("args", [])
            self.console.append(" ".join(str(a.get("value", a.get("description"))) for a in args))
        elif data.get("method") == "Runtime.exceptionThrown":
            details = data.get("params", {}).get("exceptionDetails", {})
            self.console.append(str(details.get("exception", details)))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        assert self._ws is not None
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(
            json.dumps({"id": msg_id, "method": method, "params": params or {}})
        )
        return await asyncio.wait_for(fut, self.timeout_s)

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values)."""
        res = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in res:
            raise CdpError(f"{expression!r} threw: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 20.0) -> Any:
        """Poll until `expression` is truthy; its value. Fails with the page's console."""
        errors: list[CdpError] = []

        async def value() -> Any:
            try:
                return await self.evaluate(expression)
            except CdpError as exc:  # e.g. the page is still loading its script
                errors.append(exc)
                return None

        got = await poll_until(value, within_s=timeout_s, every_s=0.2, fail=False)
        if not got:
            raise AssertionError(
                f"page never satisfied {expression!r} (last error {errors[-1:]}); "
                f"console: {self.console[-10:]}"
            )
        return got

    async def screenshot(self, path: Path) -> None:
        """A PNG of the whole page (not only the window)."""
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        await asyncio.sleep(0.5)  # let charts re-lay out at the new size
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                await asyncio.to_thread(self._proc.wait, 10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._proc is not None:  # helpers (renderer, crashpad) can outlive the browser
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        # a helper killed mid-write may still leave a file behind for a moment: retry briefly
        for _ in range(20):
            try:
                shutil.rmtree(self._profile.name)
                break
            except FileNotFoundError:
                break
            except OSError:
                await asyncio.sleep(0.1)
        self._profile.cleanup()
