"""Domain errors of the service layer; `app.main` turns them into JSON responses in one place."""

from __future__ import annotations


class AppError(Exception):
    """Base of the service's errors; the message is shown to the client as is.

    A message built from values names them as %(name)s placeholders and takes them as keywords
    (`NotFound(N_("no job %(id)s"), id=7)`): `message` is it filled in, in English, for the API
    and the logs; a page shows the template translated and filled in (`app.web.error_message`).
    """

    status_code = 500
    code = "error"

    def __init__(self, message: str, **values: object) -> None:
        self.template = message
        self.values = values
        self.message = message % values if values else message
        super().__init__(self.message)


class InvalidInput(AppError):
    status_code = 422
    code = "invalid_input"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class NotYours(NotFound):
    """A record that exists but belongs to someone the caller may not see: answered exactly as
    a missing one (its existence is not confirmed), audited as a denied access."""


class CheckpointRejected(AppError):
    """A checkpoint folder that cannot be registered or activated (it does not load)."""

    status_code = 422
    code = "checkpoint_rejected"


class NoActiveModel(AppError):
    status_code = 503
    code = "no_active_model"


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class TooManyAttempts(AppError):
    """Too many failed logins for one username; `retry_after` is in seconds."""

    status_code = 429
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int, **values: object) -> None:
        super().__init__(message, **values)
        self.retry_after = retry_after


class DatabaseUnavailable(AppError):
    """The database cannot be reached right now (down, restarting, a connection dropped
    mid-request); worth trying again after `retry_after` seconds."""

    status_code = 503
    code = "database_unavailable"

    def __init__(self, message: str, retry_after: int = 5, **values: object) -> None:
        super().__init__(message, **values)
        self.retry_after = retry_after


class Conflict(AppError):
    """The request is valid but the resource's state does not allow it (e.g. a finished job)."""

    status_code = 409
    code = "conflict"


class LastActiveAdmin(Conflict):
    """A change that would leave the service without an active admin."""

    code = "last_active_admin"
