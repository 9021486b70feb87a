"""The project's exceptions: each carries the HTTP status and one specific message."""

from __future__ import annotations


class AppError(Exception):
    """Base for every error this app raises on purpose."""

    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(AppError):
    """The configuration cannot be used; the message says what to set."""


class SignatureError(AppError):
    """A callback is not provably from Plivo (bad, missing or replayed signature)."""

    status = 403


class HandoffTokenError(AppError):
    """A handoff URL's token is missing, expired, or minted for another call or group."""

    status = 403


class ValidationError(AppError):
    """A value is out of the documented limits; `field` names the culprit."""

    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class StoreUnavailable(AppError):
    """The database did not answer; the caller decides whether that is fatal."""

    status = 503
