"""Domain errors; the app turns each into one HTTP status with a message."""


class NotFound(Exception):
    status_code = 404


class Conflict(Exception):
    status_code = 409


class Invalid(Exception):
    status_code = 422


class TooLarge(Exception):
    """An object past the grid's size limit: refused before any byte moves."""

    status_code = 413


class StaleAttempt(Conflict):
    """A runner spoke for an attempt that is no longer current (fencing)."""


class StorageUnavailable(Exception):
    """Object storage did not answer, or answered with its own fault (a
    restart, an overload): the caller may try again shortly."""

    status_code = 503


class OverCap(Exception):
    """A submission past one of its owner's caps. Unlike a rate limit, trying
    again soon will not help: the message names the cap."""

    status_code = 429
