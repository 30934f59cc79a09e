"""The one error handler: known errors become one line + hint + documented exit code.

Unknown exceptions are bugs and keep their traceback. ``PATCHCTL_DEBUG=1`` shows traces for
known errors too. Every message goes through :func:`patchctl._secrets.redact`.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import click

from patchctl._secrets import redact
from patchctl._text import escape_controls
from patchctl.errors import EXIT_INTERRUPTED, EXIT_USAGE, PatchctlError, os_error

__all__ = ["run_with_error_handling"]


def _debug() -> bool:
    return os.environ.get("PATCHCTL_DEBUG", "") not in ("", "0", "false", "no")


def run_with_error_handling(cli: click.Command, args: list[str] | None = None, **extra: Any) -> int:
    """Run a click command in standalone=False mode and map errors to exit codes."""
    try:
        rv = cli.main(args=args, standalone_mode=False, **extra)
    except PatchctlError as exc:
        if _debug():
            traceback.print_exc()
        click.echo(f"error: {escape_controls(redact(exc.message))}", err=True)
        if exc.hint:
            click.echo(f"hint: {escape_controls(redact(exc.hint))}", err=True)
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code if exc.exit_code != 1 else EXIT_USAGE
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as exc:
        known = os_error(exc)
        if known is None:
            return _bug()
        if _debug():
            traceback.print_exc()
        click.echo(f"error: {escape_controls(redact(known.message))}", err=True)
        if known.hint:
            click.echo(f"hint: {known.hint}", err=True)
        return known.exit_code
    except Exception:
        return _bug()
    return int(rv) if isinstance(rv, int) else 0


def _bug() -> int:
    click.echo(redact(traceback.format_exc()), err=True, nl=False)
    click.echo("error: internal error (a bug in patchctl; please report it with the traceback above)", err=True)
    return 1
