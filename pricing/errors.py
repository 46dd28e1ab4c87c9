"""The error base of the pricing package: a message a user can act on."""

from __future__ import annotations


class PricingError(Exception):
    """A pricing input is wrong (bad sheet, bad override, bad ledger row, newer database).

    The message names the file or value at fault and what to change; callers
    (the CLI) print it without a traceback.
    """
