"""``patchctl db upgrade|current``: the catalog's schema (Alembic migrations)."""

from __future__ import annotations

import click

from patchctl import api
from patchctl.cli._output import json_option, print_json
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


@click.group("db")
def db_group() -> None:
    """The catalog database's schema."""


@db_group.command("upgrade")
@click.pass_obj
def db_upgrade_cmd(settings: Settings) -> None:
    """Create or migrate the catalog schema to this patchctl's revision."""
    state = api.db_upgrade(settings)
    click.echo(f"{state.url}: schema at {state.current} (head)", err=True)


@db_group.command("current")
@json_option
@click.pass_obj
def db_current_cmd(settings: Settings, as_json: bool) -> None:
    """Show the catalog's schema revision and this patchctl's head revision."""
    state = api.db_current(settings)
    if as_json:
        print_json({"url": state.url, "current": state.current, "head": state.head, "up_to_date": state.up_to_date})
        return
    status = "up to date" if state.up_to_date else f"needs `patchctl db upgrade` (head {state.head})"
    click.echo(f"{state.url}: {state.current or 'no schema'} — {status}")


COMMANDS = [db_group]
