"""Text that reaches a terminal: control characters refused on input, escaped on output.

A task, a yank reason or a file name can carry ESC sequences (``\\x1b]0;...``, cursor moves,
a fake prompt); printed raw they rewrite the user's terminal. Text inputs are refused with
:func:`check_text`; everything printed for humans goes through :func:`escape_controls`
(``--json`` output is escaped by the JSON encoder already).
"""

from __future__ import annotations

import re

from patchctl.errors import InvalidInputError

__all__ = ["check_text", "escape_controls", "has_controls"]

#: C0 and C1 controls, DEL, and the bidirectional overrides/isolates (text that reads backwards)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def has_controls(text: str, *, allow_newlines: bool = False) -> bool:
    for ch in _CONTROLS.findall(text):
        if allow_newlines and ch in "\n\t":
            continue
        return True
    return False


def _escape(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character written as ``\\xNN`` (newlines and tabs kept when
    ``keep_newlines``): safe to print on a terminal."""
    if keep_newlines:
        return _CONTROLS.sub(lambda m: m.group(0) if m.group(0) in "\n\t" else _escape(m), text)
    return _CONTROLS.sub(_escape, text)


def check_text(text: str, what: str, *, allow_newlines: bool = False) -> str:
    """``text`` if it holds no control characters (newlines allowed when ``allow_newlines``),
    else an InvalidInputError naming ``what`` and showing the text escaped."""
    if has_controls(text, allow_newlines=allow_newlines):
        shown = escape_controls(text, keep_newlines=False)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidInputError(f"{what} contains control characters: {shown!r} (plain text only)")
    return text
