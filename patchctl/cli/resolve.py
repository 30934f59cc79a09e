"""``patchctl resolve REQ --onto BASE``: the version of a patch for a base, and why."""

from __future__ import annotations

import click

from patchctl.cli._output import json_option, print_json, print_table
from patchctl.errors import NotFoundError
from patchctl.registry.resolver import BaseResolution, CandidateOutcome, NoCompatibleVersionError
from patchctl.settings import Settings

__all__ = ["COMMANDS"]


def _explain(res: BaseResolution) -> None:
    def status(c: CandidateOutcome) -> str:
        if c.ref == res.chosen:
            return "CHOSEN"
        if c.rejected:
            return "rejected"
        return "not checked" if c.check is None else "fits"

    print_table(
        ["CANDIDATE", "RANK", "STATUS", "CHECKS", "WHY"],
        ([c.ref, c.rank or "-", status(c), c.check or "-", c.rejected or c.reason] for c in res.candidates),
        title=f"{res.request} for base {res.base[:12]}",
    )


@click.command("resolve")
@click.argument("request")
@click.option(
    "--onto",
    required=True,
    help="Target base: a local model directory, hf://org/repo[@rev], or a recorded base's weights fingerprint "
    "(then only check reports already in the catalog are used).",
)
@click.option("--explain", is_flag=True, help="Check every candidate and show each one's rank or rejection.")
@click.option(
    "--allow-unrelated",
    is_flag=True,
    help="Also accept versions whose source base is not a recorded ancestor of BASE (same family, checks pass).",
)
@json_option
@click.pass_obj
def resolve_cmd(
    settings: Settings, request: str, onto: str, explain: bool, allow_unrelated: bool, as_json: bool
) -> None:
    """Choose the version of REQUEST that fits the base given by --onto, and say why.

    REQUEST is org/name, org/name>=1.2,<2, org/name@alias or an exact pin (taken as is).
    Candidates are the non-yanked matching versions; each is checked against the base
    (header-level checks; reports cached in the catalog per version and base) and ranked:
    validated on this exact base > made on this exact base > the base is a recorded descendant
    of its source base (nearer first) > same family, unknown lineage (--allow-unrelated);
    ties go to the higher version. Prints the chosen org/name==X; exit 3 when none fits.
    """
    from patchctl.resolving import resolve_onto

    try:
        res = resolve_onto(
            settings, request, onto=onto, allow_unrelated=allow_unrelated, explain=explain, progress=not as_json
        )
    except NoCompatibleVersionError as exc:
        if as_json:
            print_json(exc.resolution.to_dict())
        elif explain:
            _explain(exc.resolution)
        raise
    except NotFoundError:  # no candidate at all (nothing matches, all yanked, unknown patch)
        if as_json:
            print_json({"request": request, "base": None, "chosen": None, "candidates": []})
        raise
    if as_json:
        print_json(res.to_dict())
        return
    if explain:
        _explain(res)
    chosen = next(c for c in res.candidates if c.ref == res.chosen)
    click.echo(f"{res.chosen}: {chosen.reason}", err=True)
    click.echo(res.chosen)


COMMANDS = [resolve_cmd]
