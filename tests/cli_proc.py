"""Run the `autellix` CLI as a user does: `python -m autellix.cli ...` in a child process.

Why a child process, not typer's CliRunner: the benchmark commands start services, record
`sys.argv` as their command and exit with their own status; only a real process shows all three.
"""

from __future__ import annotations

import subprocess
import sys


def autellix(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`autellix ARGS` with its stdout and stderr captured as text (the exit status unchecked)."""
    return subprocess.run(
        [sys.executable, "-m", "autellix.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
