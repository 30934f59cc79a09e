"""Data on stdout (a table or ``--json``), messages and progress on stderr."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from patchctl._text import escape_controls

__all__ = ["err_console", "json_option", "out_console", "print_json", "print_table", "to_jsonable", "warn"]

F = TypeVar("F", bound=Callable[..., Any])


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(f)


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON data; a non-finite float becomes the string ``"NaN"``/``"Infinity"``/
    ``"-Infinity"`` (bare ``NaN`` is not JSON: every ``--json`` output must parse)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if "pydantic" in sys.modules and isinstance(obj, sys.modules["pydantic"].BaseModel):
        # (a pydantic model exists only once pydantic is imported: `list` never imports it)
        return to_jsonable(obj.model_dump(mode="json"))
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_jsonable(getattr(obj, k)) for k in obj.__dataclass_fields__}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def out_console() -> Any:
    from rich.console import Console

    return Console(soft_wrap=True)


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=None if title is None else Text(escape_controls(title)), show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")  # never cut a digest or a path short
    for row in rows:
        # catalog text (tasks, reasons, paths, remote manifests) is data: no rich markup, no
        # control characters reach the terminal
        table.add_row(*(Text("" if v is None else escape_controls(str(v))) for v in row))
    out_console().print(table)


def warn(message: str) -> None:
    click.echo(f"warning: {escape_controls(message)}", err=True)
