"""``patchctl validate``, ``patchctl ci`` (+ ``ci plan``) and ``patchctl outdated``: does a patch still work on a base?

Thin: flags → one :mod:`patchctl.api` call → a table or ``--json`` on stdout; progress and
messages on stderr. Exit codes: 0 pass (or no baseline), 22 regressed, 21 checks failed
(``outdated``: 20 when some patches are not validated on their base's newest commit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from patchctl import api
from patchctl.cli._output import json_option, print_json, print_table
from patchctl.errors import EXIT_CHECK_WARNINGS, EXIT_OK, EXIT_REGRESSED
from patchctl.settings import Settings

__all__ = ["COMMANDS"]

_DEVICE = click.Choice(["auto", "cpu", "cuda"])


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _render_validation(outcome: Any) -> None:
    rows = [
        [
            t.task,
            t.metric,
            _fmt(t.patched),
            _fmt(t.unpatched),
            _fmt(t.baseline_patched),
            _fmt(t.baseline_unpatched),
            _fmt(t.retained, 3),
            t.verdict,
        ]
        for t in outcome.tasks
    ]
    print_table(
        ["TASK", "METRIC", "PATCHED", "UNPATCHED", "BASELINE PATCHED", "BASELINE UNPATCHED", "RETAINED", "VERDICT"],
        rows,
        title=f"{outcome.patch} on {outcome.base}",
    )
    for t in outcome.tasks:
        for reason in t.reasons:
            click.echo(f"{t.task}: {reason}", err=True)
    click.echo(f"{outcome.patch} on {outcome.base}: {outcome.verdict.upper()}", err=True)


def _show_report(report: Any) -> None:
    from patchctl.cli.install import render_report

    if report.failed or report.warnings:
        render_report(report, to_stderr=True)


@click.command("validate")
@click.argument("patch")
@click.option("--onto", required=True, help="The base to validate on: a local model directory or hf://org/repo[@rev].")
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N examples of each task.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="lm-eval batch size.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True, help="Where to run the model.")
@click.option("--force", is_flag=True, help="Validate even if the compatibility checks fail (recorded).")
@click.option("--trust-eval-code", is_flag=True, help="Allow the eval set to run code (`!function`, Python files).")
@json_option
@click.pass_obj
def validate_cmd(
    settings: Settings,
    patch: str,
    onto: str,
    limit: int | None,
    batch_size: int,
    device: str,
    force: bool,
    trust_eval_code: bool,
    as_json: bool,
) -> None:
    """Score PATCH's eval set on the base --onto, unpatched and patched, and judge it.

    Runs the compatibility checks first (exit 21 on failure unless --force), loads the base
    once, applies the patch in memory with install's arithmetic, scores with lm-evaluation-harness
    (offline), compares with the baseline recorded on the source base, and records the validation.
    Exit code: 0 pass or no baseline, 22 regressed, 21 checks failed.
    """
    outcome = api.validate(
        settings,
        patch,
        onto=onto,
        limit=limit,
        batch_size=batch_size,
        device=device,
        force=force,
        trust_eval_code=trust_eval_code,
        progress=not as_json,
        on_report=None if as_json else _show_report,
    )
    if as_json:
        print_json(outcome.to_json())
    else:
        _render_validation(outcome)
    click.get_current_context().exit(EXIT_REGRESSED if outcome.verdict == "regressed" else EXIT_OK)


@click.group("ci", invoke_without_command=True)
@click.option("--onto", help="The base to re-validate on: a local model directory or hf://org/repo[@rev].")
@click.option("--patches", "patches", help="Only patches whose name matches this glob (e.g. 'acme/*').")
@click.option("--family", help="Only patches whose source base has this model_type (e.g. llama).")
@click.option("--promote", help="Move this alias (e.g. stable) to every version that passes.")
@click.option("--junit", "junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here.")
@click.option(
    "--summary", "summary", type=click.Path(dir_okay=False, path_type=Path), help="Append a Markdown summary here."
)
@click.option("--limit", type=click.IntRange(min=1), help="Score only the first N examples of each task.")
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="lm-eval batch size.")
@click.option("--device", type=_DEVICE, default="auto", show_default=True, help="Where to run the model.")
@click.option("--trust-eval-code", is_flag=True, help="Allow eval sets to run code (`!function`, Python files).")
@json_option
@click.pass_context
def ci_cmd(
    ctx: click.Context,
    onto: str | None,
    patches: str | None,
    family: str | None,
    promote: str | None,
    junit: Path | None,
    summary: Path | None,
    limit: int | None,
    batch_size: int,
    device: str,
    trust_eval_code: bool,
    as_json: bool,
) -> None:
    """Re-validate the newest non-yanked version of every matching patch with an eval set on --onto.

    The base is loaded once; each patch is checked, applied in memory, scored and removed
    (the base restored exactly). Exit code: 0 all pass, 22 any regressed, 21 any refused by checks.
    `patchctl ci plan` prints a GitHub Actions matrix of the patches instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    if not onto:
        raise click.UsageError("ci needs --onto BASE")
    settings: Settings = ctx.obj
    outcome = api.ci(
        settings,
        onto=onto,
        patches=patches,
        family=family,
        promote=promote,
        limit=limit,
        batch_size=batch_size,
        device=device,
        trust_eval_code=trust_eval_code,
        progress=not as_json,
    )
    from patchctl.evaluate._ci import junit_xml, markdown_summary

    if junit is not None:
        junit_xml(outcome, junit)
    if summary is not None:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(markdown_summary(outcome))
    if as_json:
        print_json(outcome.to_json())
    else:
        if not outcome.results:
            click.echo("no matching patch carries an eval set: nothing to validate", err=True)
        print_table(
            ["PATCH", "RESULT", "PROMOTED", "DETAIL"],
            ([r.patch, r.status, r.promoted or "", r.message] for r in outcome.results),
            title=f"ci on {outcome.base}",
        )
    ctx.exit(outcome.exit_code)


@ci_cmd.command("plan")
@click.option("--onto", help="The base the matrix jobs will validate on (recorded in each entry).")
@click.option("--patches", "patches", help="Only patches whose name matches this glob.")
@click.option("--family", help="Only patches whose source base has this model_type.")
@click.option(
    "--format", "fmt", type=click.Choice(["github-matrix", "json"]), default="github-matrix", show_default=True
)
@click.pass_obj
def ci_plan_cmd(settings: Settings, onto: str | None, patches: str | None, family: str | None, fmt: str) -> None:
    """Print the patches `ci` would validate, as a GitHub Actions matrix ({"include": [{"patch": ...}]}).

    Each matrix job then runs `patchctl ci --onto BASE --patches <patch>`, all against one catalog.
    """
    plan = api.ci_plan(settings, patches=patches, family=family)
    if onto:
        for entry in plan["include"]:
            entry["onto"] = onto
    if fmt == "github-matrix":
        click.echo(json.dumps(plan, separators=(",", ":"), sort_keys=True))
    else:
        print_json(plan)


@click.command("outdated")
@json_option
@click.pass_obj
def outdated_cmd(settings: Settings, as_json: bool) -> None:
    """Patches not yet validated on the newest commit of the hf:// bases they were made or validated on.

    Asks the Hub for each base's branch head (metadata only). Exit code: 0 none, 20 some outdated.
    """
    rows = api.outdated(settings)
    if as_json:
        print_json(rows)
    elif rows:
        print_table(
            ["PATCH", "BASE", "NEWEST COMMIT", "WEIGHTS", "LAST VALIDATED ON"],
            ([r.patch, r.base, r.commit, r.weights_sha256[:12], r.last_validated or "-"] for r in rows),
        )
    else:
        click.echo("every patch is validated on its bases' newest commits", err=True)
    click.get_current_context().exit(EXIT_CHECK_WARNINGS if rows else EXIT_OK)


COMMANDS = [validate_cmd, ci_cmd, outdated_cmd]
