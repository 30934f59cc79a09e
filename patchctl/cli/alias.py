"""``patchctl alias set|rm|list``: named pointers to versions (``org/name@stable``)."""

from __future__ import annotations

import click

from patchctl import api
from patchctl.cli._output import json_option, print_json, print_table
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


@click.group("alias")
def alias_group() -> None:
    """Aliases: org/name@ALIAS resolves to the version the alias points to."""


@alias_group.command("set")
@click.argument("ref")
@click.argument("alias")
@click.argument("version", required=False)
@json_option
@click.pass_obj
def alias_set_cmd(settings: Settings, ref: str, alias: str, version: str | None, as_json: bool) -> None:
    """Point ALIAS at a version: `alias set org/name==1.0.0 stable` (or `alias set org/name stable 1.0.0`)."""
    info = api.alias_set(settings, ref, alias, version)
    click.echo(f"{info.name}@{info.alias} → {info.version}", err=True)
    if as_json:
        print_json(info)


@alias_group.command("rm")
@click.argument("name")
@click.argument("alias")
@click.pass_obj
def alias_rm_cmd(settings: Settings, name: str, alias: str) -> None:
    """Remove an alias."""
    api.alias_remove(settings, name, alias)
    click.echo(f"removed {name}@{alias}", err=True)


@alias_group.command("list")
@click.argument("name")
@json_option
@click.pass_obj
def alias_list_cmd(settings: Settings, name: str, as_json: bool) -> None:
    """List the aliases of a patch."""
    aliases = api.alias_list(settings, name)
    if as_json:
        print_json(aliases)
        return
    print_table(
        ["ALIAS", "VERSION", "UPDATED", "VALIDATED ON"],
        ([a.alias, a.version, a.updated_at, a.validated_on or "-"] for a in aliases),
    )


COMMANDS = [alias_group]
