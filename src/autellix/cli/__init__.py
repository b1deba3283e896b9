"""The `autellix` command: one typer app (`app`), one module per sub-command, the options they
share (`common`). Importing this package is cheap; `main` builds the app on first use."""

from __future__ import annotations


def main() -> None:
    """Entry point of the `autellix` script."""
    from autellix.cli.app import main as _main

    _main()
