"""``shopfloor certs create`` and ``shopfloor discover``: set up and explore OPC UA servers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from shopfloor.errors import ShopfloorError

__all__ = ["register"]

console = Console(stderr=True)

certs_app = typer.Typer(
    help="OPC UA application instance certificates.", no_args_is_help=True, add_completion=False
)


@certs_app.command("create")
def certs_create(
    name: str = typer.Option(..., "--name", help="File name stem and certificate CN."),
    uri: str = typer.Option(
        ..., "--uri", help="Application URI (the client's application_uri), e.g. urn:acme:edge-1."
    ),
    out: Path = typer.Option(Path("."), "--out", help="Folder to write the files into."),
    host: list[str] = typer.Option(
        [], "--host", help="Host name for the subjectAltName (repeatable; default: this host)."
    ),
    days: int = typer.Option(730, "--days", help="Validity in days."),
    force: bool = typer.Option(False, "--force", help="Replace existing files."),
) -> None:
    """Create a self-signed application instance certificate (NAME.der) and key."""
    from shopfloor.connectors.certs import create_certificate

    try:
        files = create_certificate(
            name, uri, out, hostnames=host or None, days=days, overwrite=force
        )
    except ShopfloorError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"certificate  {files.certificate}  (give it to the server to trust)")
    console.print(f"             {files.certificate_pem}")
    console.print(f"private key  {files.private_key}")
    console.print(f"application_uri: {uri}")


def discover_command(
    endpoint: str = typer.Argument(..., help="Server endpoint, e.g. opc.tcp://plc-1:4840."),
    root: str | None = typer.Option(
        None, "--root", help="Node id to browse from (default: the Objects folder)."
    ),
    connection: str = typer.Option("opcua-1", "--connection", help="Connection name."),
    out: Path | None = typer.Option(None, "--out", help="Write the YAML here (default stdout)."),
    full: bool = typer.Option(
        False, "--full", help="Wrap in a minimal enterprise/site/area/line: a complete file."
    ),
    max_depth: int = typer.Option(10, "--max-depth", help="How deep to browse."),
    username: str | None = typer.Option(None, "--username", help="User name."),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Environment variable holding the password."
    ),
    security_policy: str = typer.Option("None", "--security-policy", help="None|Basic256Sha256"),
    security_mode: str = typer.Option("SignAndEncrypt", "--security-mode"),
    certificate: Path | None = typer.Option(None, "--certificate", help="Client certificate."),
    private_key: Path | None = typer.Option(None, "--private-key", help="Client private key."),
) -> None:
    """Browse an OPC UA server and write a factory-file fragment (YAML)."""
    from shopfloor.connectors._opcua_discover import discover, fragment

    options: dict[str, Any] = {"security_policy": security_policy}
    if security_policy != "None":
        options["security_mode"] = security_mode
    for key, value in (
        ("username", username),
        ("password_env", password_env),
        ("certificate", certificate),
        ("private_key", private_key),
    ):
        if value is not None:
            options[key] = str(value)
    try:
        found = asyncio.run(
            discover(
                endpoint, root=root, connection=connection, options=options, max_depth=max_depth
            )
        )
    except ShopfloorError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    doc = fragment(found, connection=connection, endpoint=endpoint, full=full)
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"{len(found)} equipment, {len(doc['types'])} type(s) written to {out}")


def register(app: typer.Typer) -> None:
    """Add the ``certs`` group and the ``discover`` command to ``app``."""
    app.add_typer(certs_app, name="certs")
    app.command("discover")(discover_command)
