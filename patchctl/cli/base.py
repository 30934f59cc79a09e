"""``patchctl base add|list``: base checkpoints by fingerprint, and their lineage."""

from __future__ import annotations

from pathlib import Path

import click

from patchctl import api
from patchctl._text import escape_controls
from patchctl.cli._output import json_option, print_json, print_table
from patchctl.cli.patches import limit_option, next_page
from patchctl.errors import InvalidInputError
from patchctl.registry.reads import LINEAGE_RELATIONS
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


@click.group("base")
def base_group() -> None:
    """Bases (θ, θ′, ...) identified by their weights fingerprint, with lineage edges."""


@base_group.command("add")
@click.argument("base_dir")
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
    base_dir: str,
    revision: str | None,
    parents: tuple[str, ...],
    relation: str,
    as_json: bool,
) -> None:
    """Fingerprint a base and record it (idempotent), with its lineage.

    BASE_DIR is a local directory, or hf://org/repo[@rev]: a Hub base is fingerprinted from its
    metadata (no weights downloaded) and its lineage also comes from its model card (base_model,
    base_model_relation) and from its commit history (the nearest earlier commit in the catalog).
    """
    if base_dir.startswith("hf://"):
        from patchctl.lineage import add_hub_base

        if revision:
            raise InvalidInputError("give a Hub base's revision in the reference: hf://org/repo@REV")
        hub = add_hub_base(settings, base_dir, parents=parents, relation=relation)
        res = api.BaseAddResult(hub.base, hub.created, hub.edges)
    else:
        res = api.base_add(
            settings, Path(base_dir), revision=revision, parents=parents, relation=relation, show_progress=not as_json
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
@limit_option(100, "bases")
@click.option("--cursor", help="Start after this base (weights fingerprint printed at the end of the previous page).")
@json_option
@click.pass_obj
def base_list_cmd(settings: Settings, limit: int, cursor: str | None, as_json: bool) -> None:
    """List recorded bases (in the order they were recorded) and their parents, a page at a time."""
    listing = api.base_list(settings, limit=limit, cursor=cursor)
    if listing.bases:
        next_page(len(listing.bases), limit, listing.bases[-1].weights_sha256)
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
