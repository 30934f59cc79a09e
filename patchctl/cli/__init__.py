"""The ``patchctl`` command line: thin click commands over :mod:`patchctl.api`.

Commands live one group per module; each parses flags, calls one API function, renders.
torch and transformers are never imported here (a test asserts it).
"""

from __future__ import annotations

import logging
import sys

import click

from patchctl import __version__
from patchctl._secrets import RedactingFilter
from patchctl.cli._errors import run_with_error_handling
from patchctl.settings import Settings

__all__ = ["cli", "main"]


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="patchctl")
@click.option("--home", envvar="PATCHCTL_HOME", type=click.Path(file_okay=False), help="Data directory.")
@click.option("--db", "database_url", envvar="PATCHCTL_DATABASE_URL", help="Catalog database URL.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.pass_context
def cli(ctx: click.Context, home: str | None, database_url: str | None, verbose: int) -> None:
    """patchctl: a registry and package manager for LoRA patches.

    Push a LoRA adapter once with its lineage; install it onto every new base release
    (θ′ + Δθ), checked and merged in constant memory.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level, handlers=[handler], format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = Settings.resolve(home=home, database_url=database_url)


def _register() -> None:
    from patchctl.cli import alias as _alias
    from patchctl.cli import base as _base
    from patchctl.cli import config as _config
    from patchctl.cli import db as _db
    from patchctl.cli import evaluate as _evaluate
    from patchctl.cli import install as _install
    from patchctl.cli import lineage as _lineage
    from patchctl.cli import maintenance as _maintenance
    from patchctl.cli import patches as _patches
    from patchctl.cli import remote as _remote
    from patchctl.cli import resolve as _resolve
    from patchctl.cli import schema as _schema

    for module in (
        _schema,
        _patches,
        _alias,
        _base,
        _db,
        _install,
        _remote,
        _config,
        _resolve,
        _lineage,
        _evaluate,
        _maintenance,
    ):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    sys.exit(run_with_error_handling(cli, prog_name="patchctl"))
