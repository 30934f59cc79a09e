"""``patchctl pull`` and ``patchctl search``: patches on remotes (the Hub, directories)."""

from __future__ import annotations

import click

from patchctl import api
from patchctl.cli._output import json_option, print_json, print_table
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


@click.command("pull")
@click.argument("ref")
@json_option
@click.pass_obj
def pull_cmd(settings: Settings, ref: str, as_json: bool) -> None:
    """Fetch a patch version from a remote into the catalog, verifying every file's sha256.

    REF is hf://org/repo (newest), hf://org/repo@1.2.0 (version, tag or commit),
    hf://org/repo==1.* (specifier), file:///dir/org/name[@version], or org/name==1.* with a
    configured default remote. A file whose sha256 differs from patch.json stops the pull
    (exit 7) and nothing is recorded.
    """
    result = api.pull(settings, ref, progress=not as_json)
    v = result.version
    if as_json:
        print_json({"created": result.created, "version": v, "remote": result.remote, "commit": result.commit})
        return
    what = "pulled" if result.created else "already in the catalog:"
    click.echo(f"{what} {v.ref} from {result.remote.url} (commit {result.commit[:12]})", err=True)
    click.echo(v.ref)


@click.command("search")
@click.option("--remote", "url", help="Remote to search: hf://org, hf://org/repo or file:///dir (default: configured).")
@click.option("--task", help="Only patches for this task.")
@click.option("--family", help="Only patches for this model family (model_type, e.g. llama).")
@json_option
@click.pass_obj
def search_cmd(settings: Settings, url: str | None, task: str | None, family: str | None, as_json: bool) -> None:
    """List the patches a remote offers (on the Hub: models tagged `patchctl`)."""
    found = api.search(settings, url, task=task, family=family)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no patches found", err=True)
        return
    print_table(
        ["NAME", "URL", "LATEST", "TASK", "FAMILY"], ([p.name, p.url, p.latest, p.task, p.family] for p in found)
    )


COMMANDS = [pull_cmd, search_cmd]
