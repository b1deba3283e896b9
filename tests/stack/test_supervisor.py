"""ProcessGroup: clean stop, stubborn children, no orphans after a SIGKILLed supervisor, restarts.

Children are tiny ``python -c`` programs; "gone" means no live (non-zombie) process with that pid,
because orphans reparented to a PID 1 that does not reap stay zombies in containers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autellix.local.supervisor import ChildExitedError, ExitEvent, ProcessGroup, ServiceSpec

PY = sys.executable

# Prints its pid, then "ready", then sleeps; exits 0 on SIGTERM.
SLEEPER = "import os,time; print('pid', os.getpid()); print('ready', flush=True); time.sleep(600)"
# Ignores SIGTERM (a hung service): only SIGKILL stops it.
STUBBORN = (
    "import os,signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('pid', os.getpid()); print('ready', flush=True); time.sleep(600)"
)
# Starts a grandchild that ignores SIGTERM, in the same process group, then sleeps.
WITH_GRANDCHILD = (
    "import os,subprocess,sys,time; "
    "g = subprocess.Popen([sys.executable, '-c', "
    "'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
    "print('grandchild', g.pid); print('ready', flush=True); time.sleep(600)"
)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pid_from(group: ProcessGroup, name: str, word: str = "pid") -> int:
    line = group.wait_ready(name, pattern=rf"^{word} \d+$", timeout=20)
    return int(line.split()[1])


def test_stop_all_terminates_children_and_reports_codes(tmp_path: Path) -> None:
    group = ProcessGroup(log_dir=tmp_path, echo=False)
    with group:
        for name in ("a", "b"):
            group.start(ServiceSpec(name, [PY, "-c", SLEEPER], ready_pattern="^ready$"))
        for name in ("a", "b"):
            group.wait_ready(name, timeout=20)
        pids = [group[n].pid for n in ("a", "b")]
        assert all(alive(p) for p in pids)
    assert all(wait_gone(p, 1) for p in pids)
    assert {n: group[n].returncode for n in ("a", "b")} == {"a": -15, "b": -15}  # SIGTERM
    assert group.unexpected_exits == []
    log = (tmp_path / "a.log").read_text()
    assert f"pid {pids[0]}" in log and "ready" in log


def test_stubborn_child_is_killed_after_timeout() -> None:
    group = ProcessGroup(echo=False)
    group.start(ServiceSpec("stubborn", [PY, "-c", STUBBORN], stop_timeout=0.5))
    pid = pid_from(group, "stubborn")
    group.wait_ready("stubborn", pattern="^ready$")
    started = time.monotonic()
    codes = group.stop_all()
    took = time.monotonic() - started
    assert codes == {"stubborn": -signal.SIGKILL}
    assert 0.5 <= took < 5.0
    assert not alive(pid)


def test_stop_also_clears_grandchildren() -> None:
    group = ProcessGroup(echo=False)
    group.start(ServiceSpec("parent", [PY, "-c", WITH_GRANDCHILD], stop_timeout=1.0))
    grandchild = pid_from(group, "parent", "grandchild")
    assert alive(grandchild)
    group.stop_all()
    assert wait_gone(grandchild, 5), "a grandchild outlived the stop"


def test_unexpected_exit_is_reported_and_restart_by_name_works() -> None:
    events: list[ExitEvent] = []
    group = ProcessGroup(echo=False, on_exit=events.append)
    with group:
        crash = "import sys; print('ready', flush=True); sys.exit(3)"
        group.start(ServiceSpec("crashy", [PY, "-c", crash]))
        assert group["crashy"].exited.wait(20)
        deadline = time.monotonic() + 5
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(e.name, e.returncode, e.expected) for e in events] == [("crashy", 3, False)]
        assert [e.name for e in group.unexpected_exits] == ["crashy"]

        group.start(ServiceSpec("sched", [PY, "-c", SLEEPER]))
        first = pid_from(group, "sched")
        group.signal("sched", signal.SIGKILL)  # the scheduler-crash test does this
        assert group["sched"].exited.wait(10)
        assert group["sched"].returncode == -signal.SIGKILL
        restarted = group.restart("sched")
        second = pid_from(group, "sched")
        assert restarted.pid == second != first
        assert group["sched"] is restarted and restarted.running
        # a kill through the group API is intended, so it is not reported as a failure
        assert [e.name for e in group.unexpected_exits] == ["crashy"]

        group.restart("sched")  # restarting a running child stops it first
        third = pid_from(group, "sched")
        assert third not in (first, second) and not alive(second)


def test_wait_ready_reports_early_exit_and_timeout() -> None:
    group = ProcessGroup(echo=False)
    with group:
        group.start(
            ServiceSpec("dies", [PY, "-c", "print('boom: bad config'); raise SystemExit(2)"])
        )
        with pytest.raises(ChildExitedError, match="boom: bad config"):
            group.wait_ready("dies", pattern="never printed", timeout=20)
        group.start(ServiceSpec("slow", [PY, "-c", SLEEPER]))
        with pytest.raises(TimeoutError, match="slow not ready"):
            group.wait_ready("slow", pattern="never printed", timeout=0.5)
        with pytest.raises(ValueError, match="already running"):
            group.start(ServiceSpec("slow", [PY, "-c", SLEEPER]))


async def test_wait_ready_async_and_async_context() -> None:
    async with ProcessGroup(echo=False) as group:
        group.start(ServiceSpec("svc", [PY, "-c", SLEEPER], ready_pattern="^ready$"))
        assert await group.wait_ready_async("svc", timeout=20) == "ready"
        pid = group["svc"].pid
    assert not alive(pid)


# --------------------------------------------------------------- a supervisor in its own process

# The shape `autellix up` should have: handlers first, then start, wait, and always stop_all.
SUPERVISOR = textwrap.dedent(
    """
    import sys
    from autellix.local.supervisor import ProcessGroup, ServiceSpec
    watchdog = sys.argv[1] == "watchdog"
    group = ProcessGroup(echo=False, watchdog=watchdog)
    group.install_signal_handlers()
    try:
        group.start(ServiceSpec("plain", [sys.executable, "-c", {sleeper!r}]))
        group.start(ServiceSpec("stubborn", [sys.executable, "-c", {stubborn!r}], stop_timeout=1))
        pids = []
        for name in ("plain", "stubborn"):
            pids.append(group.wait_ready(name, pattern=r"^pid \\d+$", timeout=20).split()[1])
            # the last line: a child writing after we die would get EPIPE and exit on its own
            group.wait_ready(name, pattern="^ready$", timeout=20)
        print(" ".join(pids), flush=True)
        reason = group.wait()
    except KeyboardInterrupt:
        reason = f"signal:{{group.shutdown_signal}}"
    finally:
        codes = group.stop_all()
    print(reason, codes, flush=True)
    """
).format(sleeper=SLEEPER, stubborn=STUBBORN)


def start_supervisor(mode: str) -> tuple[subprocess.Popen[str], list[int]]:
    proc = subprocess.Popen([PY, "-c", SUPERVISOR, mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2, "supervisor failed to start its children"
    return proc, pids


def test_supervisor_stops_children_on_sigterm() -> None:
    proc, pids = start_supervisor("watchdog")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.startswith("signal:SIGTERM")
    assert f"'plain': {-signal.SIGTERM}" in out and f"'stubborn': {-signal.SIGKILL}" in out
    assert all(not alive(p) for p in pids)


def test_no_orphans_when_supervisor_is_sigkilled() -> None:
    """Death signal stops the plain child at once; the watchdog SIGKILLs the stubborn one."""
    proc, (plain, stubborn) = start_supervisor("watchdog")
    proc.kill()
    proc.wait()
    assert wait_gone(plain, 5), "plain child orphaned"
    assert wait_gone(stubborn, 10), "stubborn child orphaned"


def test_death_signal_alone_stops_cooperative_children() -> None:
    """Without the watchdog, PR_SET_PDEATHSIG still stops a child that honours SIGTERM."""
    proc, (plain, stubborn) = start_supervisor("none")
    try:
        proc.kill()
        proc.wait()
        assert wait_gone(plain, 5), "plain child orphaned"
        time.sleep(0.5)
        assert alive(stubborn), "the stubborn child ignores SIGTERM: only the watchdog ends it"
    finally:
        if alive(stubborn):
            subprocess.run(["kill", "-9", str(stubborn)], check=False)


ASYNC_SUPERVISOR = textwrap.dedent(
    """
    import asyncio, sys
    from autellix.local.supervisor import ProcessGroup, ServiceSpec

    async def main():
        async with ProcessGroup(echo=False) as group:
            group.install_signal_handlers(interrupt=False)
            group.start(ServiceSpec("plain", [sys.executable, "-c", {sleeper!r}]))
            await group.wait_ready_async("plain", pattern="^ready$", timeout=20)
            print(group["plain"].pid, flush=True)
            reason = await group.wait_async()
        print(reason, group["plain"].returncode, flush=True)

    asyncio.run(main())
    """
).format(sleeper=SLEEPER)


def test_async_supervisor_stops_children_on_sigint() -> None:
    proc = subprocess.Popen([PY, "-c", ASYNC_SUPERVISOR], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.split() == ["signal:SIGINT", str(-signal.SIGTERM)]
    assert not alive(child)


def test_wait_returns_on_unexpected_exit() -> None:
    with ProcessGroup(echo=False) as group:
        group.start(ServiceSpec("ok", [PY, "-c", SLEEPER]))
        group.start(ServiceSpec("crashy", [PY, "-c", "import time; time.sleep(0.3); exit(4)"]))
        started = time.monotonic()
        assert group.wait() == "failure:crashy"
        assert time.monotonic() - started < 10
        assert group["ok"].running
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


# --------------------------------------------------------------- the watchdog process on its own

# Starts the watchdog and three groups in sessions of their own, without a death signal (only the
# watchdog can end them): one that honours SIGTERM, one that ignores it (grace 3 s) and one
# registered and then removed again. Prints the pids, then waits to be SIGKILLed.
WATCHDOG_PARENT = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    from autellix.local.watchdog import Watchdog

    def start(code):
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
            start_new_session=True,
        )
        proc.stdout.readline(), proc.stdout.readline()  # pid, ready: its handlers are set
        return proc

    dog = Watchdog()
    plain, stubborn, dropped = start({sleeper!r}), start({stubborn!r}), start({sleeper!r})
    dog.add(plain.pid, signal.SIGTERM, 5.0)
    dog.add(stubborn.pid, signal.SIGTERM, 3.0)
    dog.add(dropped.pid, signal.SIGTERM, 5.0)
    dog.remove(dropped.pid)
    print(dog.pid, plain.pid, stubborn.pid, dropped.pid, flush=True)
    time.sleep(600)
    """
).format(sleeper=SLEEPER, stubborn=STUBBORN)


def test_watchdog_stops_registered_groups_when_its_parent_is_sigkilled() -> None:
    parent = subprocess.Popen([PY, "-c", WATCHDOG_PARENT], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        dog, plain, stubborn, dropped = pids
        assert all(alive(p) for p in pids)
        parent.kill()
        parent.wait()
        killed_at = time.monotonic()
        assert wait_gone(plain, 5), "the group that honours SIGTERM was not stopped"
        assert alive(stubborn), "the stubborn group was killed before its grace period"
        assert wait_gone(stubborn, 10), "the stubborn group was not SIGKILLed after its grace"
        assert time.monotonic() - killed_at >= 2.5, "SIGKILL came before the 3 s grace"
        assert wait_gone(dog, 5), "the watchdog did not exit once its groups were gone"
        assert alive(dropped), "a group removed from the watchdog was signalled anyway"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in pids[1:]:  # nothing of ours may outlive the test, even when it fails
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def test_watchdog_exit_command_leaves_groups_alone() -> None:
    """A supervisor that stopped everything itself says `exit`: the watchdog touches nothing."""
    from autellix.local.watchdog import Watchdog

    child = subprocess.Popen([PY, "-c", SLEEPER], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None
        child.stdout.readline()
        dog = Watchdog()
        dog.add(child.pid, signal.SIGTERM, 0.1)
        assert dog.close() == 0
        time.sleep(0.5)
        assert child.poll() is None, "the watchdog signalled a group after `exit`"
    finally:
        child.kill()
        child.wait()
