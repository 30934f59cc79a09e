"""``patchctl config``: the settings in force and where each came from."""

from __future__ import annotations

import click

from patchctl._secrets import redact
from patchctl.cli._output import json_option, print_json, print_table
from patchctl.settings import SETTINGS_TABLE, Settings

__all__ = ["COMMANDS"]


def _redact_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return redact(url)


@click.command("config")
@json_option
@click.pass_obj
def config_cmd(settings: Settings, as_json: bool) -> None:
    """Show the settings in force (flags > environment > <home>/config.toml > defaults).

    Passwords in the database URL are shown as ***.
    """
    values: dict[str, str] = {
        "home": str(settings.home),
        "database_url": _redact_url(settings.database_url),
        "default_remote": settings.default_remote or "",
        "config_file": str(settings.config_file),
        "store_dir": str(settings.store_dir),
    }
    if as_json:
        print_json(values)
        return
    rows = [[name, values[name] or "-", env] for name, _flag, env, _description in SETTINGS_TABLE]
    rows += [["config_file", values["config_file"], ""], ["store_dir", values["store_dir"], ""]]
    print_table(["SETTING", "VALUE", "ENVIRONMENT"], rows)


COMMANDS = [config_cmd]
