"""Domain errors; the app turns each into its HTTP status with its message
(one handler for DomainError, and one for the wire's StaleAttempt)."""


class DomainError(Exception):
    status_code = 500


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Invalid(DomainError):
    status_code = 422


class TooLarge(DomainError):
    """An object past the grid's size limit: refused before any byte moves."""

    status_code = 413


class StorageUnavailable(DomainError):
    """Object storage did not answer, or answered with its own fault (a
    restart, an overload): the caller may try again shortly."""

    status_code = 503


class OverCap(DomainError):
    """A submission past one of its owner's caps. Unlike a rate limit, trying
    again soon will not help: the message names the cap."""

    status_code = 429
