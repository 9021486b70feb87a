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


class UnknownGroup(AppError):
    """No agent group has that name."""

    status = 404


class RuleViolation(ValidationError):
    """A well-formed value the documented rules refuse (422); `field` names it."""

    status = 422


class HandoffConflict(AppError):
    """The call already has a live handoff."""

    status = 409


class IdempotencyMismatch(AppError):
    """An Idempotency-Key was used again with a different request."""

    status = 422


class UnknownHandoff(AppError):
    """No handoff has that id (or not one the asking key may see)."""

    status = 404


class Disabled(AppError):
    """An operator page is switched off until its secret is configured."""

    status = 404


class Throttled(AppError):
    """Too many failed logins from one address, or from everywhere."""

    status = 429


class StoreUnavailable(AppError):
    """The database did not answer; the caller decides whether that is fatal."""

    status = 503


class PlivoAPIError(Exception):
    """Plivo's REST API refused a request or could not be reached.

    `status` is Plivo's HTTP status (None when no HTTP answer came back), `api_id` and `error`
    come from Plivo's JSON body. Never matched on text: Plivo's messages change spelling.
    """

    def __init__(
        self,
        status: int | None,
        error: str,
        *,
        api_id: str | None = None,
        retry_after: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.api_id = api_id
        self.retry_after = retry_after
        self.hint = hint
        super().__init__(self.describe())

    @property
    def rate_limited(self) -> bool:
        """True when Plivo answered 429 Too Many Requests."""
        return self.status == 429

    def describe(self) -> str:
        """Return one line saying what Plivo answered and what to do about it."""
        where = f"HTTP {self.status}" if self.status is not None else "no answer"
        text = f"Plivo API: {where}: {self.error}"
        if self.rate_limited:
            wait = self.retry_after or "a short wait"
            unit = " s" if wait.isascii() and wait.isdigit() else ""
            text += f" (rate limited: retry after {wait}{unit})"
        if self.api_id:
            text += f" [api_id {self.api_id}]"
        if self.hint:
            text += f". {self.hint}"
        return text


class PlivoOutcomeUnknown(PlivoAPIError):
    """Plivo accepted a request (2xx) but its answer lacks what it documents.

    The request may have taken effect (a call placed, say): retrying blindly could do it twice.
    """
