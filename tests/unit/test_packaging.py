"""A plain `pip install .` (no checkout) must carry everything the CLI and services load."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_services_migrations_and_profiles(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("autellix-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    required = [
        "autellix/cli/app.py",
        "autellix/wire/protocol.py",
        "autellix/migrations/env.py",
        "autellix/migrations/script.py.mako",
        "autellix/services/frontend/__main__.py",
        "autellix/services/scheduler/__main__.py",
        "autellix/services/engine/__main__.py",
        "autellix/backends/sim.py",
        "autellix/backends/vllm/__init__.py",
        "autellix/backends/vllm/watchdog.py",  # started by its path, not imported
        "autellix/local/watchdog.py",  # started with python -m
    ]
    for path in required:
        assert path in names, f"{path} missing from the wheel"
    versions = [p for p in (ROOT / "migrations" / "versions").glob("*.py")]
    assert versions
    for v in versions:
        assert f"autellix/migrations/versions/{v.name}" in names
    profiles = [p.name for p in (ROOT / "src/autellix/sim/profiles").glob("*.json")]
    for name in profiles:
        assert f"autellix/sim/profiles/{name}" in names


# What `autellix.client` offered users before it became a package of one-job modules: the SDK's
# own classes and the protocol types its requests and results are made of.
CLIENT_NAMES = {
    "DEFAULT_NATS_URL", "Client", "Program", "Thread", "CallResult", "CallFailed", "CallTimeout",
    "CALL_REPLY", "CallAccepted", "CallCancel", "CallCancelReply", "CallError", "CallFinal",
    "CallRequest", "ChatMessage", "EngineInfo", "ErrorCode", "NatsConnectError", "ProgramClose",
    "ProgramOpen", "ProgramReply", "SamplingParams", "Subjects", "Timing", "TokenDelta", "Usage",
    "encode",
}  # fmt: skip


def test_client_package_exports_the_sdk_names() -> None:
    import autellix.client as client
    from autellix.wire import protocol

    assert set(client.__all__) == CLIENT_NAMES
    for name in CLIENT_NAMES:
        value = getattr(client, name)  # an AttributeError names what users' imports lost
        if hasattr(protocol, name):
            assert value is getattr(protocol, name), f"autellix.client.{name} is not the protocol's"
    assert issubclass(client.CallTimeout, client.CallFailed)
    assert issubclass(client.CallTimeout, TimeoutError)
