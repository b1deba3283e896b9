"""The `autellix` command: one typer app; each sub-command lives in `autellix.cli.<name>`.

Command modules are imported when the app is built so a heavy dependency of one command (vLLM,
matplotlib) never slows down the others: keep module-level imports in command modules light.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="autellix",
    help="Program-aware LLM serving for agents (PLAS/ATLAS over NATS + Postgres).",
    no_args_is_help=True,
    add_completion=False,
)

# Each module exposes `register(app: typer.Typer) -> None`.
COMMAND_MODULES = ("db", "up", "demo", "sim", "bench", "inspect", "chaos", "secrets")


@app.callback()
def _root() -> None:
    """Program-aware LLM serving for agents (PLAS/ATLAS over NATS + Postgres)."""


@app.command()
def version() -> None:
    """Print the Autellix version."""
    from autellix import __version__

    typer.echo(__version__)


def build_app() -> typer.Typer:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"autellix.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"autellix.cli.{name}":
                continue  # command not built yet
            raise
        module.register(app)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
