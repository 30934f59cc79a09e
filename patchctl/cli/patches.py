"""``patchctl push``, ``list``, ``show``, ``yank``, ``unyank``: the patches in the catalog."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from patchctl import api
from patchctl.cli._output import json_option, print_json, print_table, to_jsonable, warn
from patchctl.registry.records import VersionInfo
from patchctl.settings import Settings

__all__ = ["COMMANDS"]

F = TypeVar("F", bound=Callable[..., Any])
_DIR = click.Path(exists=False, file_okay=False, path_type=Path)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _publisher(settings: Settings, to: str | None) -> api.Publisher | None:
    url = api.remote_url_for(settings, to)
    return api.publisher_for(url) if url else None


@click.command("push")
@click.argument("adapter_dir", type=_DIR)
@click.option("--name", required=True, help="Patch name: namespace/name.")
@click.option("--version", "version", required=True, help="PEP 440 version, e.g. 1.0.0.")
@click.option("--task", required=True, help="What the patch was fine-tuned for (free text).")
@click.option("--base", "base_dir", required=True, type=_DIR, help="Local directory of the base it was trained on.")
@click.option("--base-revision", help="Revision (commit) of the base, recorded in the manifest.")
@click.option("--description", default="", help="Longer description.")
@click.option("--license", "license_", help="License identifier, e.g. apache-2.0.")
@click.option(
    "--to",
    "to",
    help="Also publish to this remote: hf://org/repo (one Hub repo per patch, tag v<version>) or file:///dir. "
    "Default: the configured default_remote (PATCHCTL_REMOTE).",
)
@click.option("--local-only", is_flag=True, help="Do not publish, even if a default remote is configured.")
@click.option(
    "--eval",
    "eval_dir",
    type=_DIR,
    help="An lm-eval task folder (task YAMLs + local data files) stored with the patch under eval/.",
)
@click.option("--eval-task", "eval_tasks", multiple=True, help="Task(s) of the eval folder to gate on (default: all).")
@click.option("--eval-metric", help="Metric gated on (default: each task's first metric).")
@click.option("--min-score", type=float, help="Patched score on a new base must reach this.")
@click.option(
    "--max-drop", type=float, default=0.02, show_default=True, help="Points the patched score may lose vs the baseline."
)
@click.option("--min-retained", type=float, help="Share of the patch's gain on θ that must survive on a new base.")
@click.option(
    "--no-baseline", is_flag=True, help="With --eval: do not score the source base now (validate can record it later)."
)
@click.option("--eval-limit", type=int, help="Examples per task when scoring the baseline (default: all).")
@click.option(
    "--eval-batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="lm-eval batch size when scoring the baseline (as validate's --batch-size).",
)
@click.option("--trust-eval-code", is_flag=True, help="Allow `!function` and Python files in the eval folder.")
@json_option
@click.pass_obj
def push_cmd(
    settings: Settings,
    adapter_dir: Path,
    name: str,
    version: str,
    task: str,
    base_dir: Path,
    base_revision: str | None,
    description: str,
    license_: str | None,
    to: str | None,
    local_only: bool,
    eval_dir: Path | None,
    eval_tasks: tuple[str, ...],
    eval_metric: str | None,
    min_score: float | None,
    max_drop: float | None,
    min_retained: float | None,
    no_baseline: bool,
    eval_limit: int | None,
    eval_batch_size: int,
    trust_eval_code: bool,
    as_json: bool,
) -> None:
    """Record a PEFT LoRA adapter as NAME==VERSION: manifest, files in the store, catalog rows.

    With --eval, the eval set travels with the patch, and the source base is scored unpatched and
    patched (the baseline validations compare with) unless --no-baseline.

    Re-pushing the same content is a no-op; other content under an existing version is refused
    (versions are immutable, exit code 5).
    """
    result = api.push(
        settings,
        adapter_dir,
        name=name,
        version=version,
        task=task,
        base_dir=base_dir,
        base_revision=base_revision,
        description=description,
        license=license_,
        publish=None if local_only else _publisher(settings, to),
        show_progress=not as_json,
        eval_options=None
        if eval_dir is None
        else api.EvalOptions(
            eval_dir,
            tasks=eval_tasks,
            metric=eval_metric,
            min_score=min_score,
            max_drop=max_drop,
            min_retained=min_retained,
            trust_eval_code=trust_eval_code,
            baseline=not no_baseline,
            limit=eval_limit,
            batch_size=eval_batch_size,
        ),
    )
    v = result.version
    if result.created:
        click.echo(f"pushed {v.ref} (content {_short(v.content_digest)}, {len(v.files)} files)", err=True)
    else:
        click.echo(f"{v.ref} is already recorded with identical content: nothing to do", err=True)
    if result.remote is not None:
        click.echo(f"published to {result.remote.url} ({result.remote.revision})", err=True)
    if as_json:
        print_json({"created": result.created, "version": result.version, "remote": result.remote})
    else:
        click.echo(v.ref)


def limit_option(default: int, what: str) -> Callable[[F], F]:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help=f"At most this many {what} (a page; the next page's --cursor is printed on stderr).",
    )


def next_page(rows: int, limit: int | None, cursor: object, flag: str = "--cursor") -> None:
    if limit is not None and rows >= limit:
        click.echo(f"more: next page with {flag} {cursor}", err=True)


@click.command("list")
@click.option("--namespace", help="Only patches of this namespace.")
@limit_option(100, "patches")
@click.option("--cursor", help="Start after this patch name (printed at the end of the previous page).")
@click.option(
    "--validated-on",
    "validated_on",
    help="Only patches with a version that passed validation on this exact base (directory, hf://repo@rev, fingerprint).",
)
@json_option
@click.pass_obj
def list_cmd(
    settings: Settings, namespace: str | None, limit: int, cursor: str | None, validated_on: str | None, as_json: bool
) -> None:
    """List the patches in the catalog (newest non-yanked version of each), by name, a page at a time."""
    patches = api.list_patches(settings, namespace, limit=limit, cursor=cursor, validated_on=validated_on)
    if patches:
        next_page(len(patches), limit, patches[-1].name)
    if as_json:
        print_json(patches)
        return
    if not patches:
        click.echo("no patches in the catalog (push one with `patchctl push`)", err=True)
        return
    print_table(
        ["NAME", "LATEST", "TASK", "VERSIONS", "ALIASES"],
        (
            [
                p.name,
                p.latest or "(all yanked)",
                p.task or "",
                f"{p.versions}" + (f" ({p.yanked} yanked)" if p.yanked else ""),
                ", ".join(f"{a}→{v}" for a, v in p.aliases.items()),
            ]
            for p in patches
        ),
    )


def _warn_yanked(v: VersionInfo) -> None:
    if v.yanked:
        warn(f"{v.ref} is yanked" + (f": {v.yank_reason}" if v.yank_reason else ""))


@click.command("show")
@click.argument("ref")
@click.option("--all-reports", is_flag=True, help="Every compat report, not only the newest per base.")
@limit_option(20, "compat reports and installs each")
@click.option("--reports-cursor", type=int, help="Reports older than this report id (the previous page's last).")
@click.option("--installs-cursor", type=int, help="Installs older than this install id (the previous page's last).")
@json_option
@click.pass_obj
def show_cmd(
    settings: Settings,
    ref: str,
    all_reports: bool,
    limit: int,
    reports_cursor: int | None,
    installs_cursor: int | None,
    as_json: bool,
) -> None:
    """Show one version: manifest, files, source base and its lineage, aliases, remotes, reports.

    REF is org/name (newest non-yanked), org/name==1.2.0, org/name==1.*, or org/name@alias.
    Compat reports: the newest per base (--all-reports for every one); reports and installs
    are paged (--limit, --reports-cursor, --installs-cursor).
    """
    d = api.show(
        settings,
        ref,
        all_reports=all_reports,
        limit=limit,
        reports_cursor=reports_cursor,
        installs_cursor=installs_cursor,
    )
    if d.compat_reports:
        next_page(len(d.compat_reports), limit, d.compat_reports[-1].id, "--reports-cursor")
    if d.installs:
        next_page(len(d.installs), limit, d.installs[-1].id, "--installs-cursor")
    _warn_yanked(d.version)
    if as_json:
        data = to_jsonable(d)
        data["version"]["files"] = to_jsonable(d.version.files)
        print_json(data)
        return
    v, mf = d.version, d.version.manifest
    sb = mf.source_base
    fam = sb.family
    rows = [
        ("name", v.name),
        ("version", v.version + ("  (YANKED" + (f": {v.yank_reason}" if v.yank_reason else "") + ")" if v.yanked else "")),
        ("task", mf.task),
        ("description", mf.description or "-"),
        ("license", mf.license or "-"),
        ("created", v.created_at.isoformat(timespec="seconds")),
        ("content", v.content_digest),
        ("lora", f"r={mf.lora.r} alpha={mf.lora.lora_alpha:g} rslora={mf.lora.use_rslora} pairs={mf.lora.lora_pairs} "
                 f"params={mf.lora.total_parameters}"),
        ("targets", ", ".join(mf.lora.target_modules) if isinstance(mf.lora.target_modules, tuple)
                    else str(mf.lora.target_modules)),
        ("base", f"{sb.repo}" + (f"@{sb.revision}" if sb.revision else "")),
        ("base weights", sb.weights_sha256),
        ("base family", f"{fam.model_type} hidden={fam.hidden_size} layers={fam.num_hidden_layers} vocab={fam.vocab_size}"),
        ("versions", ", ".join(x.version + (" (yanked)" if x.yanked else "") for x in d.versions)),
        ("aliases", ", ".join(f"{a.alias}→{a.version}" + (f" (validated on {_short(a.validated_on)})"
                                                             if a.validated_on else "") for a in d.aliases) or "-"),
        ("eval", ", ".join(f"{t.task} ({t.metric})" for t in mf.eval.tasks) if mf.eval else "-"),
    ]  # fmt: skip
    print_table(["FIELD", "VALUE"], rows, title=v.ref)
    print_table(["FILE", "SHA256", "SIZE"], ([f.path, f.sha256, f.size] for f in v.files), title="files")
    if d.lineage:
        print_table(
            ["DEPTH", "RELATION", "BASE", "WEIGHTS"],
            ([a.depth, a.relation, a.base.source, _short(a.base.weights_sha256)] for a in d.lineage),
            title="source base lineage",
        )
    if d.remotes:
        print_table(["REMOTE", "REVISION", "PUSHED"], ([r.url, r.revision, r.pushed_at] for r in d.remotes))
    if d.compat_reports:
        print_table(
            ["REPORT", "BASE", "STATUS", "WHEN"],
            ([r.id, _short(r.base_weights_sha256), r.status, r.created_at] for r in d.compat_reports),
            title="compat reports",
        )
    if d.validations:
        print_table(
            ["VALIDATION", "BASE", "REF", "VERDICT", "SCORES", "WHEN"],
            (
                [
                    r.id,
                    _short(r.base_weights_sha256),
                    r.base_ref or "",
                    r.verdict + (" (forced)" if r.forced else ""),
                    "; ".join(
                        f"{t.get('task')}: {t.get('patched')} vs {t.get('unpatched')}"
                        for t in r.scores.get("tasks", [])
                    ),
                    r.created_at,
                ]
                for r in d.validations
            ),
            title="validations",
        )
    if d.installs:
        print_table(
            ["INSTALL", "BASE", "FORMAT", "FORCED", "OUT"],
            ([r.id, _short(r.base_weights_sha256), r.format, r.forced, r.out_path] for r in d.installs),
            title="installs",
        )


@click.command("yank")
@click.argument("ref")
@click.argument("version", required=False)
@click.option("--reason", help="Why (shown to whoever pins it).")
@json_option
@click.pass_obj
def yank_cmd(settings: Settings, ref: str, version: str | None, reason: str | None, as_json: bool) -> None:
    """Yank a version (org/name==1.0.0): resolvers skip it unless it is pinned exactly."""
    v = api.yank(settings, ref, version, reason=reason)
    click.echo(f"yanked {v.ref}", err=True)
    if as_json:
        print_json(v)


@click.command("unyank")
@click.argument("ref")
@click.argument("version", required=False)
@json_option
@click.pass_obj
def unyank_cmd(settings: Settings, ref: str, version: str | None, as_json: bool) -> None:
    """Undo a yank."""
    v = api.unyank(settings, ref, version)
    click.echo(f"unyanked {v.ref}", err=True)
    if as_json:
        print_json(v)


COMMANDS = [push_cmd, list_cmd, show_cmd, yank_cmd, unyank_cmd]
