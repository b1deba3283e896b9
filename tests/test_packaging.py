"""A plain `pip install .` (no checkout) must carry everything the CLI and services load."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_services_migrations_and_profiles(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("autellix-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    required = [
        "autellix/cli.py",
        "autellix/protocol.py",
        "autellix/migrations/env.py",
        "autellix/migrations/script.py.mako",
        "autellix/services/frontend/__main__.py",
        "autellix/services/scheduler/__main__.py",
        "autellix/services/engine/__main__.py",
        "autellix/services/engine/backends/sim.py",
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
