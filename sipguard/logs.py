"""Logging: one handler for the app's loggers, with secrets redacted as a second line of defence.

The first line of defence is that no code logs a request body, a password or a token. The
filter below still replaces every configured secret, and handoff tokens in URLs, should one slip
into a message or its arguments.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

LOGGER = "sipguard"
REDACTED = "[redacted]"
_TOKEN_PARAM = re.compile(r"((?:^|[?&])token=)[^&\s\"']+")
_MIN_SECRET_LENGTH = 4  # shorter strings would redact ordinary words


class RedactingFilter(logging.Filter):
    """Replace secrets in a record's final message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(
            {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True
        )

    def redact(self, text: str) -> str:
        """Return `text` with every secret and handoff token replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _TOKEN_PARAM.sub(rf"\g<1>{REDACTED}", text) if "token=" in text else text

    def filter(self, record: logging.LogRecord) -> bool:
        # The final message replaces msg and args, so the formatter does not build it again.
        record.msg, record.args = self.redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        return True


def configure(level: str, secrets: Iterable[str]) -> logging.Logger:
    """Give the app's logger one redacting stderr handler (replacing any earlier one)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if getattr(handler, "_sipguard", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler._sipguard = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    logger.addHandler(handler)
    logger.propagate = False
    return logger
