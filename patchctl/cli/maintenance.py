"""``patchctl verify`` and ``patchctl gc``: the content store against the catalog."""

from __future__ import annotations

import click

from patchctl.cli._output import json_option, print_json, print_table
from patchctl.errors import IntegrityError
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


@click.command("verify")
@json_option
@click.pass_obj
def verify_cmd(settings: Settings, as_json: bool) -> None:
    """Re-hash the content store against the catalog (and laid-out versions against the store).

    Exit 0 when everything matches, 7 when a blob is missing or damaged or a layout differs.
    """
    from patchctl.maintenance import verify

    report = verify(settings)
    if as_json:
        print_json({"ok": report.ok, **{k: v for k, v in report.__dict__.items()}})
    elif report.damage:
        print_table(
            ["KIND", "VERSION", "FILE", "DETAIL"], ([d.kind, d.version, d.path, d.detail] for d in report.damage)
        )
    summary = f"{report.versions} versions, {report.blobs} blobs ({report.bytes} bytes) checked"
    if not report.ok:
        raise IntegrityError(
            f"{summary}: {len(report.damage)} problem(s)",
            hint="pull or push a damaged version again to restore its blobs; a damaged layout is rebuilt on install",
        )
    click.echo(f"{summary}: all intact", err=True)


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@json_option
@click.pass_obj
def gc_cmd(settings: Settings, dry_run: bool, as_json: bool) -> None:
    """Remove temporaries of killed processes, blobs no version refers to, and stale layouts.

    Never touches a referenced blob or a running process's files; unreferenced blobs younger
    than an hour are kept (a push in progress may be about to record them).
    """
    from patchctl.maintenance import gc

    report = gc(settings, dry_run=dry_run)
    if as_json:
        print_json({"dry_run": report.dry_run, "bytes": report.bytes, "removed": report.removed})
        return
    if report.removed:
        print_table(["KIND", "PATH", "BYTES"], ([i.kind, i.path, i.bytes] for i in report.removed))
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {len(report.removed)} item(s), {report.bytes} bytes", err=True)


COMMANDS = [gc_cmd, verify_cmd]
