"""``patchctl lineage REF|BASE``: the lineage tree (rich Tree)."""

from __future__ import annotations

from typing import Any

import click

from patchctl.cli._output import json_option, out_console, print_json
from patchctl.registry.records import BaseInfo, LineageGraph
from patchctl.settings import Settings

__all__ = ["COMMANDS", "render_lineage"]

_STYLE = {"pass": "[green]pass[/]", "warn": "[yellow]warn[/]", "fail": "[red]fail[/]"}


def _label(b: BaseInfo) -> str:
    rev = f"@{b.revision}" if b.revision else ""
    return f"[bold]{b.weights_sha256[:12]}[/] {b.source}{rev} [dim]({b.family.model_type})[/]"


def render_lineage(g: LineageGraph) -> Any:
    """The graph as a rich Tree: roots are bases without a parent in the graph; a base with several
    parents hangs under the first and names the others."""
    from rich.markup import escape
    from rich.tree import Tree

    by_sha = {b.weights_sha256: b for b in g.bases}
    parents: dict[str, list[tuple[str, str]]] = {}
    children: dict[str, list[tuple[str, str]]] = {}
    for e in g.edges:
        parents.setdefault(e.child, []).append((e.parent, e.relation))
        children.setdefault(e.parent, []).append((e.child, e.relation))
    versions: dict[str, list[str]] = {}
    for v in g.versions:
        versions.setdefault(v.source_weights_sha256, []).append(
            escape(v.ref) + (" [red](yanked)[/]" if v.yanked else "")
        )
    results: dict[str, list[str]] = {}
    for r in g.results:
        kind = "validated" if r.kind == "validation" else "checked"
        results.setdefault(r.base_weights_sha256, []).append(
            f"{kind} {escape(r.ref)}: {_STYLE.get(r.status, escape(r.status))}"
        )
    tree = Tree("lineage", guide_style="dim")

    def add(node: Any, sha: str, relation: str | None, seen: set[str]) -> None:
        b = by_sha[sha]
        head = (f"--{relation}--> " if relation else "") + _label(b)
        others = [p for p, _ in parents.get(sha, [])[1:]]
        if others:
            head += " [dim](also from " + ", ".join(p[:12] for p in others) + ")[/]"
        child = node.add(head)
        for ref in versions.get(sha, []):
            child.add(f"patch {ref}")
        if sha in g.more_versions:
            child.add(f"[dim]… {g.more_versions[sha]} more versions made on this base[/]")
        for line in results.get(sha, []):
            child.add(line)
        seen.add(sha)
        for kid, rel in children.get(sha, []):
            if kid not in seen and parents[kid][0][0] == sha:
                add(child, kid, rel, seen)

    seen: set[str] = set()
    for b in g.bases:
        if not any(p in by_sha for p, _ in parents.get(b.weights_sha256, [])):
            add(tree, b.weights_sha256, None, seen)
    for b in g.bases:  # cycles cannot be recorded, but never drop a base
        if b.weights_sha256 not in seen:
            add(tree, b.weights_sha256, None, seen)
    orphans = sorted(s for s in versions if s not in by_sha)
    for sha in orphans:
        node = tree.add(f"[bold]{sha[:12]}[/] [dim](base not recorded in the catalog)[/]")
        for ref in versions[sha]:
            node.add(f"patch {ref}")
    return tree


@click.command("lineage")
@click.argument("target")
@click.option("--per-base", type=click.IntRange(min=1), default=20, show_default=True,
              help="When TARGET is a base: at most this many patch versions listed per base.")  # fmt: skip
@json_option
@click.pass_obj
def lineage_cmd(settings: Settings, target: str, per_base: int, as_json: bool) -> None:
    """Draw the lineage around TARGET: a patch (org/name) or a base (directory, hf://repo@rev, fingerprint).

    Shows the bases connected to it (ancestors and descendants, with their revisions and
    relations), each patch version on the base it was made on, and the checks and validations
    on the bases they ran on.
    """
    from patchctl.lineage import lineage

    g = lineage(settings, target, per_base_limit=per_base, progress=not as_json)
    if as_json:
        print_json(g)
        return
    out_console().print(render_lineage(g))


COMMANDS = [lineage_cmd]
