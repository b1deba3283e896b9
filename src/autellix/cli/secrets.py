"""`autellix secrets generate`: the secrets of a compose or Kubernetes deployment, in one directory.

What it writes and why is in `autellix.local.deploy_secrets`; how compose.yaml and deploy/k8s
use the files is in docs/deploy.md ("Secrets").
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

secrets_app = typer.Typer(
    help="Secrets for compose and Kubernetes deployments.", no_args_is_help=True
)


@secrets_app.command()
def generate(
    out: Annotated[
        Path,
        typer.Option("--out", help="Directory to write to (created mode 0700 if missing)."),
    ],
    namespace: Annotated[
        str,
        typer.Option(
            "--namespace",
            envvar="AUTELLIX_NAMESPACE",
            help="The deployment's AUTELLIX_NAMESPACE (the NATS permissions name its subjects).",
        ),
    ] = "autellix",
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="A name or IP the NATS server certificate is valid for (repeatable; default: "
            "nats, localhost, 127.0.0.1). On Kubernetes add nats.<namespace>.svc.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the secrets already in --out.")
    ] = False,
) -> None:
    """Per-role NATS users and their server config, NATS TLS (a CA and a server certificate),
    an HTTP API key, the Postgres password, and the files that hand them to compose
    (compose.env) and to Kubernetes (kustomization.yaml). Every file is mode 0600."""
    from autellix.local import deploy_secrets
    from autellix.local.tls_certs import DEFAULT_HOSTS

    try:
        result = deploy_secrets.generate(
            out, namespace=namespace, hosts=tuple(host or DEFAULT_HOSTS), force=force
        )
    except deploy_secrets.SecretsExistError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    d = result.directory
    typer.echo(f"wrote {len(result.files)} files to {d} (mode 0600)")
    typer.echo(f"  compose:    docker compose --env-file {d / deploy_secrets.COMPOSE_ENV} up")
    typer.echo(f"  Kubernetes: kubectl apply -k {d}")
    typer.echo(f"  clients:    {d / 'client.json'} (NATS user), {d / 'api-keys.txt'} (HTTP API)")


def register(app: typer.Typer) -> None:
    app.add_typer(secrets_app, name="secrets")
