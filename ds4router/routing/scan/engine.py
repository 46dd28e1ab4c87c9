"""The scan: every rule and detector over the text and its decoded views, findings placed
back in the original text, of overlapping findings the most specific kept.

``scan(text)`` is what the rest of the app calls (through
``ds4router.routing.detectors``). Order of preference where findings overlap:
a secret before personal data, a provider's rule before a generic detector, the
longer before the shorter.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ds4router.routing.scan import generic, pii
from ds4router.routing.scan.findings import Category, Finding, shannon_entropy
from ds4router.routing.scan.keywords import KeywordIndex
from ds4router.routing.scan.normalize import views
from ds4router.routing.scan.precision import benign, benign_token
from ds4router.routing.scan.rules import default_rules

Scanner = Callable[[str, str, KeywordIndex], Iterator[tuple[str, int, int, str]]]

_SECRET_SCANNERS: tuple[tuple[tuple[str, ...], Scanner], ...] = (
    (("private_key", "aws_secret_access_key"), generic.scan_base64),
    (("password_assignment", "aws_secret_access_key"), generic.scan_assignments),
    (("password_assignment",), generic.scan_xml),
    (("password_flag",), generic.scan_command_lines),
    (("url_password",), generic.scan_urls),
    (("http_auth",), generic.scan_headers),
    (("password_assignment", "password_prose"), generic.scan_credential_files),
)
_PII_SCANNERS: tuple[tuple[tuple[str, ...], Scanner], ...] = (
    (("email",), pii.scan_email),
    (("iban", "payment_card", "uk_nino", "us_ssn", "national_id", "phone"), pii.scan_numbers),
)


def detector_kinds() -> tuple[str, ...]:
    kinds = set(default_rules().kinds)
    for group in (_SECRET_SCANNERS, _PII_SCANNERS):
        for names, _ in group:
            kinds.update(names)
    return tuple(sorted(kinds))


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    kind: str
    category: Category
    tier: int  # 0: a provider's rule, 1: a generic detector, 2: personal data
    rule: str
    why: str


def scan(
    text: str, *, allowlist: Iterable[str] = (), disabled: Iterable[str] = ()
) -> list[Finding]:
    """All findings in ``text`` (and in its decoded views), placed in ``text``."""
    allow = [re.compile(p) for p in allowlist]
    off = frozenset(disabled)
    spans: list[_Span] = []
    for view in views(text):
        for found in _scan_view(view.text, off):
            value = view.text[found.start : found.end]
            if benign_token(value) if found.tier == 0 else benign(found.kind, value):
                continue
            start, end = view.span(found.start, found.end)
            original = text[start:end]
            if allow and any(p.search(value) or p.search(original) for p in allow):
                continue
            why = found.why if view.name == "text" else f"{found.why}; seen in the {view.name} text"
            spans.append(_Span(start, end, found.kind, found.category, found.tier, found.rule, why))
    spans.sort(key=lambda s: (s.tier, s.start - s.end, s.start))
    kept: list[_Span] = []
    for span in spans:
        if not any(span.start < k.end and span.end > k.start for k in kept):
            kept.append(span)
    kept.sort(key=lambda s: s.start)
    return [_finding(text, s) for s in kept]


def _finding(text: str, span: _Span) -> Finding:
    value = text[span.start : span.end]
    why = span.why
    if span.category == "secret" and span.kind != "private_key":
        why = f"{why}; entropy {shannon_entropy(value):.1f} bits/char"
    return Finding(
        span.kind,
        span.category,
        span.start,
        span.end,
        text.count("\n", 0, span.start) + 1,
        value,
        rule=span.rule,
        why=why,
    )


def _scan_view(text: str, off: frozenset[str]) -> Iterator[_Span]:
    lower = text.lower()
    rules = default_rules()  # registers its literals before the index is built
    kw = KeywordIndex(lower)
    if "secret" not in off:
        for hit in rules.scan(text, kw, off):
            if hit.rule.id in off:
                continue
            why = f"rule {hit.rule.id}"
            yield _Span(hit.start, hit.end, hit.rule.kind, "secret", 0, hit.rule.id, why)
        yield from _run(_SECRET_SCANNERS, text, lower, kw, off, "secret", 1)
    if "pii" not in off:
        yield from _run(_PII_SCANNERS, text, lower, kw, off, "pii", 2)


def _run(
    scanners: tuple[tuple[tuple[str, ...], Scanner], ...],
    text: str,
    lower: str,
    kw: KeywordIndex,
    off: frozenset[str],
    category: Category,
    tier: int,
) -> Iterator[_Span]:
    for kinds, scanner in scanners:
        if all(k in off for k in kinds):
            continue
        for kind, start, end, why in scanner(text, lower, kw):
            if kind not in off and end > start:
                yield _Span(start, end, kind, category, tier, kind, why)
