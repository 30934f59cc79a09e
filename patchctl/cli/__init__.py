"""The ``patchctl`` command line: thin click commands over :mod:`patchctl.api`.

Commands live one group per module; each parses flags, calls one API function, renders.
torch and transformers are never imported here (a test asserts it).

The root group loads a command's module only when that command runs (``patchctl list`` imports
:mod:`patchctl.cli.patches`, not the evaluation or remote commands), so that start-up costs
what the command needs. ``patchctl --help`` lists every command from :data:`COMMAND_TABLE`
without importing any of them; ``tests/cli/test_lazy_cli.py`` checks the table against the
commands themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, MutableMapping
from gettext import gettext as _
from typing import Any, NoReturn

import click

from patchctl import __version__
from patchctl._secrets import log_to_stderr
from patchctl.cli._errors import run_with_error_handling
from patchctl.settings import Settings

__all__ = ["COMMAND_TABLE", "cli", "main", "run"]

#: every top-level command: name -> (module under ``patchctl.cli`` whose ``COMMANDS`` holds it,
#: its one-line help as ``patchctl --help`` shows it, i.e. ``get_short_help_str`` untruncated)
COMMAND_TABLE: dict[str, tuple[str, str]] = {
    "alias": ("alias", "Aliases: org/name@ALIAS resolves to the version the alias points to."),
    "base": ("base", "Bases (θ, θ′, ...) identified by their weights fingerprint, with lineage edges."),
    "check": ("install", "Run the compatibility checks of PATCH against the base given by --onto."),
    "ci": (
        "evaluate",
        "Re-validate the newest non-yanked version of every matching patch with an eval set on --onto.",
    ),
    "config": ("config", "Show the settings in force (flags > environment > <home>/config.toml > defaults)."),
    "db": ("db", "The catalog database's schema."),
    "gc": ("maintenance", "Remove temporaries of killed processes, blobs no version refers to, and stale layouts."),
    "install": ("install", "Check PATCH against the base --onto, then write it merged into --out (θ′ + Δθ)."),
    "lineage": (
        "lineage",
        "Draw the lineage around TARGET: a patch (org/name) or a base (directory, hf://repo@rev, fingerprint).",
    ),
    "list": (
        "patches",
        "List the patches in the catalog (newest non-yanked version of each), by name, a page at a time.",
    ),
    "outdated": (
        "evaluate",
        "Patches not yet validated on the newest commit of the hf:// bases they were made or validated on.",
    ),
    "pull": ("remote", "Fetch a patch version from a remote into the catalog, verifying every file's sha256."),
    "push": ("patches", "Record a PEFT LoRA adapter as NAME==VERSION: manifest, files in the store, catalog rows."),
    "resolve": ("resolve", "Choose the version of REQUEST that fits the base given by --onto, and say why."),
    "schema": ("schema", "Print the JSON Schema of the patch manifest (patch.json)."),
    "search": ("remote", "List the patches a remote offers (on the Hub: models tagged `patchctl`)."),
    "show": ("patches", "Show one version: manifest, files, source base and its lineage, aliases, remotes, reports."),
    "unyank": ("patches", "Undo a yank."),
    "validate": ("evaluate", "Score PATCH's eval set on the base --onto, unpatched and patched, and judge it."),
    "verify": (
        "maintenance",
        "Re-hash the content store against the catalog (and laid-out versions against the store).",
    ),
    "yank": ("patches", "Yank a version (org/name==1.0.0): resolvers skip it unless it is pinned exactly."),
}


#: set by :func:`main` (not when the group is run in another program's process, e.g. tests)
_FREEZE_IMPORTS = False


def _import_command_module(name: str) -> Any:
    """Import ``patchctl.cli.<name>`` with the cyclic garbage collector paused: the import creates
    hundreds of thousands of objects (SQLAlchemy, pydantic) and no garbage worth a collection,
    and the collections it would trigger cost about a tenth of a command's start-up. In the
    ``patchctl`` process (:func:`main`) the objects it made (modules, classes, functions: they
    live as long as the process) are then frozen, so that the command's own collections do
    not walk them again."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return importlib.import_module(f"patchctl.cli.{name}")
    finally:
        if _FREEZE_IMPORTS:
            gc.freeze()
        if was_enabled:
            gc.enable()


class _LazyCommands(MutableMapping[str, click.Command]):
    """The root group's commands: the names are known up front (:data:`COMMAND_TABLE`); a
    command's module is imported the first time the command itself is looked up."""

    def __init__(self) -> None:
        self._loaded: dict[str, click.Command] = {}

    def loaded(self, name: str) -> click.Command | None:
        return self._loaded.get(name)

    def __getitem__(self, name: str) -> click.Command:
        cmd = self._loaded.get(name)
        if cmd is None:
            if name not in COMMAND_TABLE:
                raise KeyError(name)
            module = _import_command_module(COMMAND_TABLE[name][0])
            for command in module.COMMANDS:
                assert command.name is not None
                self._loaded.setdefault(command.name, command)
            cmd = self._loaded[name]
        return cmd

    def __setitem__(self, name: str, cmd: click.Command) -> None:
        self._loaded[name] = cmd

    def __delitem__(self, name: str) -> None:
        raise TypeError("patchctl's commands cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(COMMAND_TABLE.keys() | self._loaded.keys()))

    def __len__(self) -> int:
        return len(COMMAND_TABLE.keys() | self._loaded.keys())


class _Group(click.Group):
    commands: _LazyCommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a command not yet imported is listed with its help from the table."""
        rows: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self.commands.loaded(name) or click.Command(name, help=COMMAND_TABLE[name][1])
            if not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section(_("Commands")):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])


@click.group(
    cls=_Group,
    commands=_LazyCommands(),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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
    log_to_stderr(logging.WARNING - 10 * min(verbose, 2))
    ctx.obj = Settings.resolve(home=home, database_url=database_url)


def main() -> None:
    """The ``patchctl`` command: exits (``SystemExit``) with its exit code."""
    sys.exit(_run())


def run() -> NoReturn:
    """The ``patchctl`` executable and ``python -m patchctl``: :func:`main`, ended by :func:`_exit`."""
    _exit(_run())


def _run() -> int:
    global _FREEZE_IMPORTS
    _FREEZE_IMPORTS = True
    args = sys.argv[1:]
    if _command_name(args) == "install" and not _option(args, "--onto", "").startswith("hf://"):
        from patchctl import _mergeproc

        _mergeproc.prestart()  # its torch import runs beside this process's start-up
    return run_with_error_handling(cli, prog_name="patchctl")


def _option(args: list[str], name: str, default: str) -> str:
    """The value of option ``name`` in ``args`` (``--name VALUE`` or ``--name=VALUE``; the last one)."""
    value = default
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


def _command_name(args: list[str]) -> str | None:
    """The command that ``args`` name (the first argument that is not a root option or its value)."""
    values = iter(args)
    for arg in values:
        if arg in ("--home", "--db"):
            next(values, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _exit(code: int) -> NoReturn:
    """End the ``patchctl`` process (not a program that calls :func:`main`) with ``code`` as an
    interpreter exit would, less the teardown of its modules: once torch is imported, that
    teardown (hundreds of thousands of objects freed one by one, torch's operator libraries
    unregistered) takes 0.4-0.8 s here, a sixth of an install of a 1 GB base. What an exit does
    that anyone can see still happens, in the same order: non-daemon threads are joined (after
    ``concurrent.futures`` has told its workers to stop), :mod:`atexit` functions run (logging's
    flush, ``weakref.finalize`` clean-ups such as temporary directories, coverage's data file),
    the standard streams are flushed. The catalog's connections are closed by then (each command closes its catalog);
    the files patchctl writes are closed and, where it matters, fsynced before they are renamed.
    Where the interpreter lacks these hooks, the exit is the ordinary one."""
    shutdown = getattr(threading, "_shutdown", None)
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exitfuncs is None:
        sys.exit(code)
    shutdown()
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # a reader that went away (`| head`) is not an error, as in run_with_error_handling; a
        # stream closed by the caller has nothing left to flush
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
