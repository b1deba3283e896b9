"""`AUTELLIX_READY_FILE`: a real service process creates the file once it is ready and removes it
when it drains, and a file left behind by an earlier process never reads as ready (the
Kubernetes readiness probes in deploy/k8s run `test -f` on it)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from svc_stack import Stack

from autellix.runtime.service import EXIT_NOT_MIGRATED, READY_FILE_ENV
from autellix.runtime.settings import Settings


async def test_the_file_appears_when_ready_and_goes_at_drain(
    new_stack: Callable[[], Stack], tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    ready.write_text("stale\n")  # an earlier process's file: must not survive the start
    stack = new_stack()
    stack.start("scheduler", "scheduler", env={READY_FILE_ENV: str(ready)})
    try:
        await stack.wait_ready("scheduler")
        assert ready.read_text() == f"{stack.group['scheduler'].pid}\n"
    finally:
        await stack.stop()
    assert stack.group["scheduler"].popen.returncode == 0
    assert not ready.exists()


async def test_a_service_that_cannot_start_removes_a_stale_file(
    settings: Settings, make_database: Callable[..., str], tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    ready.write_text("stale\n")
    env = {
        **os.environ,
        **Settings(settings.nats_url, make_database(migrated=False), settings.namespace).to_env(),
        READY_FILE_ENV: str(ready),
    }
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "autellix.services.scheduler"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == EXIT_NOT_MIGRATED, proc.stderr
    assert not ready.exists()
