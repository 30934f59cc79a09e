"""``patchctl schema``: the JSON Schema of patch.json."""

from __future__ import annotations

import click

from patchctl.cli._output import print_json
from patchctl.schemas.manifest import Manifest

__all__ = ["COMMANDS"]


@click.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the patch manifest (patch.json)."""
    print_json(Manifest.json_schema())


COMMANDS = [schema_cmd]
