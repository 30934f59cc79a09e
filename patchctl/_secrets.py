"""Keep Hugging Face tokens out of logs, catalog rows and error messages."""

from __future__ import annotations

import logging
import os
import re

__all__ = ["RedactingFilter", "log_to_stderr", "redact"]

_TOKEN_RE = re.compile(r"\bhf_[A-Za-z0-9]{8,}\b")
_BEARER_RE = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?bearer\s+)[^\s'\",}]+")
_URL_CRED_RE = re.compile(r"(://[^/@\s:]+:)[^/@\s]+@")


def redact(text: str) -> str:
    """Replace anything that looks like a token (and the current HF_TOKEN value) with ``***``."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PATCHCTL_HF_TOKEN"):
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    text = _TOKEN_RE.sub("***", text)
    text = _BEARER_RE.sub(r"\1***", text)
    return _URL_CRED_RE.sub(r"\1***@", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts tokens in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging's own handling
            return True
        record.msg, record.args = redact(message), None
        return True


def log_to_stderr(level: int) -> None:
    """Log records of ``level`` and above on stderr, tokens redacted (the CLI and its merge child)."""
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    logging.basicConfig(level=level, handlers=[handler], format="%(levelname)s %(name)s: %(message)s")
