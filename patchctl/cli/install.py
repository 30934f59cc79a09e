"""``patchctl check`` and ``patchctl install``: a patch against a base, then θ′ + Δθ."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from patchctl import api
from patchctl._text import escape_controls
from patchctl.cli._output import err_console, json_option, print_json, print_table, to_jsonable
from patchctl.errors import PatchctlError
from patchctl.settings import Settings

if TYPE_CHECKING:  # imported where needed: pydantic's models are a tenth of a second of start-up
    from patchctl.schemas.report import CompatReport

__all__ = ["COMMANDS", "render_report", "report_json"]

_STYLE = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}


def render_report(report: CompatReport, *, to_stderr: bool = False) -> None:
    """The report as a table (stdout for `check`, stderr for `install`)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("CHECK", "RESULT", "DETAIL", show_edge=False, header_style="bold")
    for r in report.results:
        table.add_row(Text(escape_controls(r.name)), _STYLE.get(r.status, r.status), Text(escape_controls(r.detail)))
    console = Console(stderr=to_stderr, soft_wrap=False)
    console.print(table)
    # one greppable line
    console.print(escape_controls(report.summary()), markup=False, highlight=False, soft_wrap=True)


def report_json(report: CompatReport) -> dict[str, object]:
    """The report as data, with its overall status and exit code (properties, not fields)."""
    return {"status": report.status, "exit_code": report.exit_code(), **report.model_dump(mode="json")}


@click.command("check")
@click.argument("patch")
@click.option("--onto", required=True, help="Target base: a local model directory or hf://org/repo[@rev].")
@click.option(
    "--drift",
    is_flag=True,
    help="Also measure weight drift per patched module (reads both bases' weights; local bases only).",
)
@click.option(
    "--source-base",
    type=click.Path(file_okay=False, path_type=Path),
    help="The base the patch was trained on, for --drift (default: the manifest's source directory).",
)
@json_option
@click.pass_obj
def check_cmd(settings: Settings, patch: str, onto: str, drift: bool, source_base: Path | None, as_json: bool) -> None:
    """Run the compatibility checks of PATCH against the base given by --onto.

    PATCH is a catalog reference (org/name, org/name==1.*, org/name@alias), a remote
    (hf://org/repo@v1.0, file:///dir) or a local adapter directory (./dir). The checks read the
    base's config.json, tokenizer files and safetensors headers (hf:// bases over HTTP range
    requests: no weights downloaded); a local base's weight files are hashed once for its
    fingerprint (remembered while unchanged). The report is logged in the catalog.
    Exit code: 0 all pass, 20 warnings, 21 failures.
    """
    outcome = api.check(settings, patch, onto=onto, progress=not as_json, drift=drift, source_base=source_base)
    if as_json:
        print_json({"report_id": outcome.report_id, **report_json(outcome.report)})
    else:
        render_report(outcome.report)
    click.get_current_context().exit(outcome.report.exit_code())


def _size(ctx: click.Context, param: click.Parameter, value: str) -> int:
    from patchctl.merge._blocks import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("install")
@click.argument("patch")
@click.option("--onto", required=True, help="Target base: a local model directory or hf://org/repo[@rev].")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Output directory.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["merged", "adapter"]),
    default="merged",
    show_default=True,
    help="merged: full model with the patch merged in; adapter: the PEFT adapter rebased onto the new base.",
)
@click.option("--force", is_flag=True, help="Install despite failed checks (recorded as forced).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (checks still apply).")
@click.option("--dry-run", is_flag=True, help="Print the check report and the merge plan; write nothing.")
@click.option(
    "--max-memory",
    default="512MiB",
    show_default=True,
    callback=_size,
    help="Peak memory of the merge, whatever the tensor sizes: larger LoRA deltas are computed in row blocks.",
)
@json_option
@click.pass_obj
def install_cmd(
    settings: Settings,
    patch: str,
    onto: str,
    out: Path | None,
    fmt: str,
    force: bool,
    overwrite: bool,
    dry_run: bool,
    max_memory: int,
    as_json: bool,
) -> None:
    """Check PATCH against the base --onto, then write it merged into --out (θ′ + Δθ).

    The merge streams in bounded memory (--max-memory; large LoRA deltas in row blocks), overlaps
    reading, merging and writing, copies untouched tensors without decoding, and equals PEFT's
    merge_and_unload bit for bit. An hf:// base is merged shard by shard as it downloads. The output appears atomically;
    patchctl.json in it records the patch, the base fingerprint and every file's sha256.
    Checks that fail stop the install (exit 21) unless --force; an existing --out is kept
    (exit 5) unless --overwrite.
    """
    from patchctl import _mergeproc

    # the merge runs in a child process, which imports torch while this one checks
    merging = fmt == "merged" and not dry_run and out is not None
    worker = _mergeproc.for_install(onto, merging, settings.dtype_plan_cache_dir)
    try:
        outcome = api.install(
            settings,
            patch,
            onto=onto,
            out=out,
            format=fmt,  # type: ignore[arg-type]
            force=force,
            overwrite=overwrite,
            dry_run=dry_run,
            progress=not as_json,
            max_memory=max_memory,
            merge_worker=worker,
            # shown as soon as the checks ran: before a refusal or the merge's progress bar
            # (a dry run's report is its data, on stdout, unless the install is refused)
            on_report=None
            if as_json
            else lambda r: render_report(r, to_stderr=not dry_run or bool(r.failed and not force)),
        )
    except PatchctlError as exc:
        from patchctl.schemas.report import CompatReport

        report = getattr(exc, "report", None)
        if isinstance(report, CompatReport) and as_json:
            # the data a script needs to see why: the report, on stdout like `check --json`
            print_json({"installed": False, "report": report_json(report)})
        raise
    finally:
        if worker is not None:
            worker.close()
    report = outcome.check.report
    if as_json:
        print_json(
            {
                "report_id": outcome.check.report_id,
                "report": report_json(report),
                "format": outcome.format,
                "dry_run": outcome.dry_run,
                "forced": outcome.forced,
                "out_dir": outcome.out_dir,
                "plan": outcome.plan,
                "result": to_jsonable(outcome.result),
                "install_id": outcome.install_id,
                "decision": outcome.decision,
            }
        )
        return
    if outcome.decision is not None and outcome.decision.get("chosen"):
        click.echo(f"resolved {outcome.decision['request']} for this base: {outcome.decision['chosen']}", err=True)
    if dry_run:
        plan = outcome.plan
        if plan is None:
            click.echo("(no merge plan: --format adapter copies the adapter files only)")
            return
        print_table(
            ["SHARD", "TENSORS", "TOUCHED", "BYTES"],
            ([s["file"], s["tensors"], s["touched"], s["bytes"]] for s in plan["shards"]),
        )
        click.echo(
            f"plan: {plan['tensors_touched']} of {plan['tensors_total']} tensors touched, "
            f"{plan['bytes_to_write']} bytes to write; nothing written (--dry-run)"
        )
        blocked = plan.get("memory", {}).get("blocked_tensors", [])
        if blocked:
            click.echo(
                f"memory: {len(blocked)} LoRA delta(s) over the --max-memory budget computed in row blocks "
                "(each blocking is checked against the whole product first; merged whole where it differs)"
            )
        return
    assert outcome.result is not None
    res = outcome.result
    if outcome.forced:  # also logged; said here so that it shows whatever the logging setup
        click.echo(
            f"warning: installed despite failed checks ({', '.join(r.name for r in report.failed)}): "
            "--force, recorded as forced",
            err=True,
        )
    if res.get("merged_whole"):
        click.echo(
            f"note: {len(res['merged_whole'])} delta(s) computed whole, over --max-memory: row blocks would not "
            f"give the whole product's bits on this machine ({', '.join(res['merged_whole'][:3])})",
            err=True,
        )
    what = (
        f"{res['tensors_touched']} tensors merged"
        if outcome.format == "merged"
        else f"rebased adapter ({len(res['files'])} files)"
    )
    err_console().print(
        escape_controls(
            f"installed {outcome.check.patch} onto {outcome.check.base}: {what}, "
            f"{res['bytes_written']} bytes in {res['seconds']} s"
        ),
        markup=False,
        highlight=False,
    )
    click.echo(str(outcome.out_dir))


COMMANDS = [check_cmd, install_cmd]
