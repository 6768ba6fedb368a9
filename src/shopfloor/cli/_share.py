"""``shopfloor share create|list|revoke``: data products offered to partner organisations."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from shopfloor.cli._api import _expiry, _fail, _run, _run_path, _when, auth_db_opt, db_opt

if TYPE_CHECKING:
    from shopfloor.api._shares import Share

__all__ = ["app"]

err = Console(stderr=True)

app = typer.Typer(
    help="Data shares: a named data product (signals or assets, a time window, an "
    "aggregation level) offered to a partner organisation through its own token.",
    no_args_is_help=True,
)


def _time(text: str, option: str) -> datetime:
    from shopfloor.cli._query import parse_time

    try:
        return parse_time(text, datetime.now(UTC))
    except ValueError as exc:
        raise _fail(f"{option} {text!r}: {exc}", 2) from None


def _check_model(factory: Path, share_select: list[str], level: str) -> None:
    """Exit 2 unless the selectors select something of the factory at this level."""
    from shopfloor.api._shares import ShareError, ShareLevel, ShareProduct, check_selector
    from shopfloor.model import FactoryFileError, load_factory

    try:
        model = load_factory(factory)
        lvl = ShareLevel.parse(level)
        product = ShareProduct(
            tuple(check_selector(s) for s in share_select), lvl, datetime.now(UTC)
        )
    except (FactoryFileError, ShareError) as exc:
        raise _fail(str(exc), 2) from exc
    if lvl.kind == "oee":
        found = [a.path for a in model.assets() if product.selects(a.path)]
    else:
        numeric = {"float", "int", "bool"}
        found = [
            s.path
            for s in model.signals()
            if product.selects(s.path) and (lvl.kind == "raw" or s.data_type in numeric)
        ]
    if not found:
        raise _fail(f"the selectors select nothing of {factory} at level {lvl}", 2)


def _row(s: Share) -> dict[str, object]:
    return {
        "id": s.id,
        "name": s.name,
        "partner": s.partner,
        "purpose": s.purpose,
        "select": list(s.product.selectors),
        "level": str(s.product.level),
        "start": s.product.start.isoformat(),
        "end": s.product.end and s.product.end.isoformat(),
        "state": s.state(),
        "created_by": s.created_by,
        "created_at": s.created_at.isoformat(),
        "expires_at": s.expires_at.isoformat(),
        "revoked_at": s.revoked_at and s.revoked_at.isoformat(),
        "last_used_at": s.last_used_at and s.last_used_at.isoformat(),
        "url": f"/api/v1/shared/{s.id}",
    }


@app.command("create")
def create(
    name: str = typer.Argument(..., help="The data product's name (unique), e.g. supplier-x-oee."),
    partner: str = typer.Option(..., "--partner", help="The partner organisation."),
    purpose: str = typer.Option(..., "--purpose", help="What the partner uses the data for."),
    select: list[str] = typer.Option(
        ...,
        "--select",
        help="Asset or signal path or pattern ('*' one segment, '**' any); repeat.",
    ),
    level: str = typer.Option(
        ...,
        "--level",
        help="raw; a bucket of at least 1m (15m, 1h, 1d: min/max/avg/count only); "
        "or oee:hour, oee:day, oee:shift (OEE ratios only).",
    ),
    since: str = typer.Option(..., "--since", help="Start of the window (ISO 8601, -30d)."),
    until: str | None = typer.Option(
        None, "--until", help="End of the window (exclusive); open when left out."
    ),
    expires: str = typer.Option(
        ..., "--expires", help="Expiry: a duration (30d, 12h) or a time (ISO 8601)."
    ),
    factory: Path | None = typer.Option(
        None, "--factory", help="Check that the selectors select something of this factory."
    ),
    db: str = db_opt,
    auth_db: Path | None = auth_db_opt,
) -> None:
    """Create a share and print its token once (only its hash is kept)."""
    from shopfloor.api._auth import AuthStore
    from shopfloor.api._shares import NewShare, ShareStore

    expires_at = _expiry(expires)
    start = _time(since, "--since")
    end = None if until is None else _time(until, "--until")
    if factory is not None:
        _check_model(factory, select, level)
    path = _run_path(auth_db, db)

    async def work() -> NewShare:
        async with AuthStore(path) as store:
            return await ShareStore(store).create(
                name,
                partner=partner,
                purpose=purpose,
                select=select,
                level=level,
                start=start,
                end=end,
                expires_at=expires_at,
            )

    new = _run(work)
    s = new.share
    err.print(
        f"created share [bold]{s.name}[/] ({s.id}) for {s.partner}: "
        f"{', '.join(s.product.selectors)} at level {s.product.level}, "
        f"window {_when(s.product.start)} – "
        f"{_when(s.product.end) if s.product.end else 'open'}, expires {_when(s.expires_at)}.\n"
        f"The partner reads GET /api/v1/shared/{s.id} and /api/v1/shared/{s.id}/data with "
        "this token, shown this once; hand it over securely:",
        highlight=False,
    )
    typer.echo(new.token)


@app.command("list")
def list_(
    db: str = db_opt,
    auth_db: Path | None = auth_db_opt,
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """Every share (revoked and expired ones too) with its product, state and last use."""
    from shopfloor.api._auth import AuthStore
    from shopfloor.api._shares import ShareStore

    path = _run_path(auth_db, db)

    async def work() -> list[Share]:
        async with AuthStore(path) as store:
            return await ShareStore(store).shares()

    shares = _run(work)
    if as_json:
        for s in shares:
            typer.echo(json.dumps(_row(s), ensure_ascii=False))
        return
    table = Table(title=f"shares in {path}")
    table.add_column("id", no_wrap=True)
    for col in ("name", "partner", "select", "level", "window", "state", "expires", "last used"):
        table.add_column(col)
    style = {"active": "green", "expired": "yellow", "revoked": "red"}
    for s in shares:
        state = s.state()
        window = f"{_when(s.product.start)} –\n{_when(s.product.end) if s.product.end else 'open'}"
        table.add_row(
            s.id,
            s.name,
            s.partner,
            "\n".join(s.product.selectors),
            str(s.product.level),
            window,
            f"[{style[state]}]{state}[/]",
            _when(s.expires_at),
            _when(s.last_used_at),
        )
    Console().print(table)


@app.command("revoke")
def revoke(
    share: str = typer.Argument(..., help="The share's id or name (see 'share list')."),
    db: str = db_opt,
    auth_db: Path | None = auth_db_opt,
) -> None:
    """Revoke a share: its token reads nothing from the next request on."""
    from shopfloor.api._auth import AuthStore
    from shopfloor.api._shares import ShareStore

    path = _run_path(auth_db, db)

    async def work() -> Share:
        async with AuthStore(path) as store:
            return await ShareStore(store).revoke(share)

    s = _run(work)
    err.print(f"revoked share [bold]{s.name}[/] ({s.id})", highlight=False)
