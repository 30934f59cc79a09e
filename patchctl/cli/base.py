"""``patchctl base add|list``: base checkpoints by fingerprint, and their lineage."""

from __future__ import annotations

from pathlib import Path

import click

from patchctl import api
from patchctl._text import escape_controls
from patchctl.cli._output import json_option, print_json, print_table
from patchctl.registry.store import LINEAGE_RELATIONS
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


@click.group("base")
def base_group() -> None:
    """Bases (θ, θ′, ...) identified by their weights fingerprint, with lineage edges."""


@base_group.command("add")
@click.argument("base_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--revision", help="Revision (commit) of this base.")
@click.option(
    "--parent",
    "parents",
    multiple=True,
    help="The base this one derives from: a local directory, a weights fingerprint, or hf://repo@rev "
    "already in the catalog. Repeatable.",
)
@click.option(
    "--relation",
    type=click.Choice(LINEAGE_RELATIONS),
    default="update",
    show_default=True,
    help="How this base derives from its parent(s).",
)
@json_option
@click.pass_obj
def base_add_cmd(
    settings: Settings,
    base_dir: Path,
    revision: str | None,
    parents: tuple[str, ...],
    relation: str,
    as_json: bool,
) -> None:
    """Fingerprint a local base directory and record it (idempotent), with its lineage."""
    res = api.base_add(
        settings, base_dir, revision=revision, parents=parents, relation=relation, show_progress=not as_json
    )
    what = "recorded" if res.created else "already known:"
    click.echo(f"{what} base {res.base.weights_sha256[:12]} ({escape_controls(res.base.source)})", err=True)
    for e in res.edges:
        click.echo(f"  {e.child[:12]} --{e.relation}--> {e.parent[:12]}", err=True)
    if as_json:
        print_json(res)
    else:
        click.echo(res.base.weights_sha256)


@base_group.command("list")
@json_option
@click.pass_obj
def base_list_cmd(settings: Settings, as_json: bool) -> None:
    """List recorded bases and their parents."""
    listing = api.base_list(settings)
    if as_json:
        print_json(listing)
        return
    parents: dict[str, list[str]] = {}
    for e in listing.edges:
        parents.setdefault(e.child, []).append(f"{e.parent[:12]} ({e.relation})")
    print_table(
        ["WEIGHTS", "FAMILY", "SOURCE", "REVISION", "PARENTS"],
        (
            [
                b.weights_sha256[:12],
                b.family.model_type,
                b.source,
                b.revision,
                ", ".join(parents.get(b.weights_sha256, [])),
            ]
            for b in listing.bases
        ),
    )


COMMANDS = [base_group]
