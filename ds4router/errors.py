"""The error base of the ds4router package: a message a user can act on."""

from __future__ import annotations


class Ds4RouterError(Exception):
    """A failure the user can fix; the CLI prints the message without a traceback.

    ``exit_code`` is 2 for user errors (bad input, bad config) and 1 for runtime
    failures (a backend failed, a request was refused).
    """

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(Ds4RouterError):
    """A configuration file is invalid: the message names file, line and key."""
