"""Detectors for credentials and personal data in request text: the app's entry point.

The scan itself lives in :mod:`ds4router.routing.scan` (normalised and decoded views,
credential rules as data in ``credentials.toml``, generic detectors with context,
validated personal data, and the precision filters). This module keeps the names the
rest of the app and the tests use.
"""

from __future__ import annotations

from ds4router.routing.scan.engine import detector_kinds, scan
from ds4router.routing.scan.findings import (
    Category,
    Finding,
    redact,
    redact_text,
    shannon_entropy,
)
from ds4router.routing.scan.pii import iban_ok, luhn_ok
from ds4router.routing.scan.precision import is_placeholder

DETECTOR_KINDS: tuple[str, ...] = detector_kinds()

__all__ = [
    "DETECTOR_KINDS",
    "Category",
    "Finding",
    "iban_ok",
    "is_placeholder",
    "luhn_ok",
    "redact",
    "redact_text",
    "scan",
    "shannon_entropy",
]
