"""What every service process does around its own logic: settings, logging, uvloop, the
migration check, signals, and an orderly drain on SIGTERM.

A service is an object with `async start()`, `async stop()` (drain) and a `name`; `run_service`
starts it, logs one `"<name> ready"` line (the supervisor and the tests wait for it), waits for
SIGTERM/SIGINT, stops it and exits 0. Failures at start-up (un-migrated database, NATS down) are
logged as one JSON line *and* printed plainly to stderr, and the process exits non-zero.

With `AUTELLIX_READY_FILE=<path>` the process also creates that file when it is ready and removes
it when the drain begins: a readiness probe for orchestrators (`test -f <path>`, the Kubernetes
manifests in deploy/k8s) for services that have no HTTP endpoint of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from autellix.runtime.settings import Settings, env_float, resolve
from autellix.runtime.telemetry import setup_logging, setup_tracing

EXIT_NOT_MIGRATED = 3
EXIT_START_FAILED = 1
CRASH_ENV = "AUTELLIX_TEST_CRASH_AT"
STALL_ENV = "AUTELLIX_LOOP_STALL_S"  # log a warning when the event loop is this late (s)
STALL_DEFAULT_S = 0.25
READY_FILE_ENV = "AUTELLIX_READY_FILE"


class CrashPoint:
    """Test-only fault injection: with `AUTELLIX_TEST_CRASH_AT=<point>:<n>` the process SIGKILLs
    itself the n-th time it reaches `<point>`, so tests can hit an exact crash point (e.g. the
    scheduler's `after_transition`, the frontend's `after_insert`). Unset: one string compare."""

    def __init__(self) -> None:
        point, _, n = os.environ.get(CRASH_ENV, "").partition(":")
        self.point = point or None
        self.left = int(n or 1)

    def __call__(self, point: str) -> None:
        if point == self.point:
            self.left -= 1
            if self.left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


class Service(Protocol):
    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def ready_fields(self) -> dict[str, Any]: ...


def resolve_settings(
    nats_url: str | None, database_url: str | None, namespace: str | None
) -> Settings:
    """Flags, then AUTELLIX_* environment variables; services need both URLs."""
    try:
        return resolve(nats_url, database_url, namespace).require()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


Builder = Callable[[Settings, Any], Awaitable[Service]]


def run_service(name: str, build: Builder, settings: Settings) -> None:
    """Run a service until SIGTERM/SIGINT; exit with a meaningful status code."""
    log = setup_logging(name)
    setup_tracing(name)
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - non-Linux
        runner = asyncio.run
    code = runner(_main(name, build, settings, log))
    raise SystemExit(code)


async def _main(name: str, build: Builder, settings: Settings, log: Any) -> int:
    from autellix.store.schema_check import NotMigratedError, require_migrated

    assert settings.database_url is not None
    mark_ready(False)  # a file left by an earlier process in this container is not ours
    try:
        await require_migrated(settings.database_url)
    except NotMigratedError as exc:
        log.error("database not migrated", error=str(exc))
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_NOT_MIGRATED
    except Exception as exc:
        log.error("cannot reach the database", error=repr(exc))
        print(f"error: cannot reach the database: {exc!r}", file=sys.stderr, flush=True)
        return EXIT_START_FAILED

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    watch = asyncio.ensure_future(watch_loop(log, stall_threshold(log)))
    service = await build(settings, log)
    starting = asyncio.ensure_future(service.start())
    stopping = asyncio.ensure_future(stop.wait())
    # a SIGTERM while still starting (e.g. waiting for NATS) ends the process too
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        log.info(f"{name} stopped before it was ready")
        return 0
    stopping.cancel()
    exc = starting.exception()
    if exc is not None:
        log.error("start-up failed", error=repr(exc))
        print(f"error: {name} failed to start: {exc!r}", file=sys.stderr, flush=True)
        return EXIT_START_FAILED
    log.info(f"{name} ready", namespace=settings.namespace, **service.ready_fields())
    mark_ready(True)
    await stop.wait()
    mark_ready(False)
    log.info(f"{name} stopping (drain)")
    try:
        await asyncio.wait_for(service.stop(), timeout=60.0)
    except Exception as exc:
        log.exception("unclean stop", error=repr(exc))
        return EXIT_START_FAILED
    log.info(f"{name} stopped")
    watch.cancel()  # (asyncio.run cancels it on the early returns)
    return 0


def mark_ready(ready: bool) -> None:
    """Create (ready) or remove (not ready, draining) the `AUTELLIX_READY_FILE`, when one is set.
    Why a file: the scheduler and the engine serve no HTTP, and their metrics port answers from
    process start, long before an engine has loaded its model."""
    path = os.environ.get(READY_FILE_ENV)
    if not path:
        return
    if ready:
        Path(path).write_text(f"{os.getpid()}\n")
    else:
        Path(path).unlink(missing_ok=True)


def stall_threshold(log: Any) -> float:
    """`AUTELLIX_LOOP_STALL_S` in seconds; a value that is not a number is logged and the
    default used (a typo in a diagnostic setting must not stop a service)."""
    return env_float(STALL_ENV, STALL_DEFAULT_S, log)


async def watch_loop(log: Any, threshold_s: float, tick_s: float = 0.05) -> None:
    """Log `event loop stalled` whenever this process's event loop ran a tick late by more than
    `threshold_s`: a callback that blocked it, or a process starved of CPU. Why: every token a
    service relays and every Postgres write it makes waits on this loop, so a stall shows up as
    a pause in callers' streams; the log line says which process paused and for how long.
    `threshold_s <= 0` turns it off."""
    if threshold_s <= 0:
        return
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(tick_s)
        late = loop.time() - t0 - tick_s
        if late > threshold_s:
            log.warning("event loop stalled", late_ms=round(late * 1000, 1))
