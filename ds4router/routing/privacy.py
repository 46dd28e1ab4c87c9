"""The privacy level of a request: the maximum over everything that contributes.

Contributions: the project default, ``privacy.paths`` globs of attached files
(matched on the path as given and on where it resolves to), inline tags
(``#secret`` ...; lowering below the default only when the project sets
``allow_downgrade``), content that cannot be read (``privacy.unreadable``), and the
detectors' findings in every piece of text the request carries.

``classify_conversation`` is the entry point for a whole request (the session's
conversation, the HTTP gateway's chat bodies): it takes ``Piece``s
(``ds4router.routing.scan.pieces``) and scans each one the same way.
``classify_privacy`` is the same for a typed request with its attachments. Pure:
the caller reads files; this module only looks at text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ds4router.config.schema import PrivacyConfig
from ds4router.routing.detectors import Finding, redact_text, scan
from ds4router.routing.levels import PrivacyLevel, max_level
from ds4router.routing.request import Attachment, privacy_tags
from ds4router.routing.scan.findings import fingerprint, replace_findings
from ds4router.routing.scan.pieces import Piece, PieceKind


@dataclass(frozen=True)
class Contribution:
    source: str  # what raised (or set) the level, in words
    level: PrivacyLevel


@dataclass(frozen=True)
class FileFinding:
    """A finding and where it was: ``None`` for the request text, else the file path or
    the label of the piece (``messages[3].content``, ``earlier turn 2 (answer)``)."""

    where: str | None
    finding: Finding
    kind: PieceKind = PieceKind.USER

    def to_dict(self) -> dict[str, object]:
        out = self.finding.to_dict()
        out["where"] = self.where or "text"
        out["source"] = str(self.kind)
        return out


@dataclass(frozen=True)
class PrivacyResult:
    level: PrivacyLevel
    contributions: tuple[Contribution, ...]
    findings: tuple[FileFinding, ...]
    notes: tuple[str, ...] = ()
    # The level from everything but the detectors (default, tags, paths, unreadable
    # content, earlier turns): what redaction can lower the level to, never below.
    without_findings: PrivacyLevel | None = None

    @property
    def floor(self) -> PrivacyLevel:
        return self.level if self.without_findings is None else self.without_findings


def redaction_applies(privacy: PrivacyResult, config: PrivacyConfig) -> bool:
    """``privacy.on_detected: redact`` and the level is above the cloud limit only because
    of detector findings: a cloud target may get the request with them replaced."""
    limit = config.cloud_max_privacy
    return (
        config.on_detected == "redact"
        and bool(privacy.findings)
        and privacy.level > limit
        and privacy.floor <= limit
    )


def glob_match(path: str, pattern: str) -> bool:
    """Glob with ``**`` spanning directories and ``*`` staying inside one.

    As in ``.gitignore``, a pattern without a ``/`` matches the file name at any depth.
    """
    path = _strip_dot_slash(path.replace("\\", "/"))
    if "/" not in pattern.strip("/"):
        path = path.rsplit("/", 1)[-1]
    return _glob_regex(pattern).fullmatch(path) is not None


def _strip_dot_slash(path: str) -> str:
    while path.startswith("./"):
        path = path[2:]
    return path.lstrip("/")


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    pattern = _strip_dot_slash(pattern)
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append(r"(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(r".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def attachment_pieces(attachments: Sequence[Attachment]) -> list[Piece]:
    return [Piece(PieceKind.ATTACHMENT, a.path, a.text, a.unreadable) for a in attachments]


def classify_privacy(
    text: str,
    attachments: Sequence[Attachment],
    config: PrivacyConfig,
    context: Sequence[Piece] = (),
) -> PrivacyResult:
    """The level of a typed request (``text``, its attachments) with the conversation's
    earlier ``context`` pieces: everything is scanned."""
    pieces = [Piece(PieceKind.USER, "", text), *attachment_pieces(attachments), *context]
    paths = [(a.path, a.resolved) for a in attachments]
    return classify_conversation(pieces, config, paths=paths, tags_from=text)


def classify_conversation(
    pieces: Sequence[Piece],
    config: PrivacyConfig,
    *,
    paths: Sequence[tuple[str, str | None]] = (),
    tags_from: str | None = None,
) -> PrivacyResult:
    """The privacy level of a whole request, from all of its pieces.

    ``pieces``: every text the request carries (see ``pieces_from_chat``), each scanned
    by the same detectors; a finding is placed by the piece's ``where`` (an empty
    label means the request text, ``FileFinding.where is None``). ``paths``: attached
    files as (path as given, resolved path or None), matched against ``privacy.paths``.
    ``tags_from``: the text whose ``#level`` tags count (default: every user piece).
    Returns the level, every contribution in words, and the findings (redacted
    previews only: no finding's text is in any string this result renders).
    """
    default = config.default
    contributions = [Contribution("project default (privacy.default)", default)]
    notes: list[str] = []
    if tags_from is None:
        tags_from = "\n".join(p.text for p in pieces if p.kind is PieceKind.USER)
    base = _tags(tags_from, config, contributions, notes)
    contributions.extend(_path_contributions(paths, config))
    floor = max_level(*(c.level for c in contributions[1:]), base)  # before any detector
    findings: list[FileFinding] = []
    levels = {"secret": config.detectors.secrets, "pii": config.detectors.pii}
    allow = tuple(config.allowlist)
    off = tuple(config.detectors.disabled)
    for piece in pieces:
        label = piece.where or None
        if piece.unreadable:
            contributions.append(
                Contribution(
                    f"{label or 'text'} cannot be read as text (privacy.unreadable)",
                    config.unreadable,
                )
            )
            floor = max(floor, config.unreadable)
        if not piece.text:
            continue
        for finding in _scan_cached(piece.text, allow, off):
            findings.append(FileFinding(label, finding, piece.kind))
            place = f"{label}:{finding.line}" if label else f"line {finding.line}"
            contributions.append(
                Contribution(f"detector {finding.kind} ({place})", levels[finding.category])
            )
    level = max_level(*(c.level for c in contributions[1:]), base)
    return PrivacyResult(level, tuple(contributions), tuple(findings), tuple(notes), floor)


def _tags(
    text: str, config: PrivacyConfig, contributions: list[Contribution], notes: list[str]
) -> PrivacyLevel:
    """Inline tags: raise the level, or lower the base when the project allows it."""
    default = config.default
    base = default
    for tag in privacy_tags(text):
        if tag > default:
            contributions.append(Contribution(f"tag #{tag}", tag))
        elif tag < default:
            if config.allow_downgrade:
                base = min(base, tag)
                contributions.append(Contribution(f"tag #{tag} (downgrade allowed)", tag))
            else:
                notes.append(
                    f"tag #{tag} ignored: it is below the project default '{default}'; "
                    "set privacy.allow_downgrade: true to allow lowering"
                )
    if base < default:
        contributions[0] = Contribution(f"tag #{base} lowers the project default", base)
    return base


def _path_contributions(
    paths: Sequence[tuple[str, str | None]], config: PrivacyConfig
) -> list[Contribution]:
    out: list[Contribution] = []
    for path, resolved in paths:
        for rule in config.paths:
            hit = next((p for p in (path, resolved) if p and glob_match(p, rule.glob)), None)
            if hit is None:
                continue
            via = "" if hit == path else f" -> {hit}"
            out.append(Contribution(f"file {path}{via} (privacy.paths {rule.glob!r})", rule.level))
    return out


@lru_cache(maxsize=256)
def _scan_cached(text: str, allow: tuple[str, ...], off: tuple[str, ...]) -> tuple[Finding, ...]:
    # A conversation is scanned again with every new message (and the TUI's preview on
    # every keystroke): earlier pieces are scanned once. The cache lives in RAM only.
    return tuple(scan(text, allowlist=allow, disabled=off))


def findings_in(text: str | None, config: PrivacyConfig) -> tuple[Finding, ...]:
    """The findings in ``text`` under the project's allowlist and disabled detectors."""
    if not text:
        return ()
    return _scan_cached(text, tuple(config.allowlist), tuple(config.detectors.disabled))


def redact_at_rest(text: str | None, config: PrivacyConfig) -> str | None:
    """``text`` as it may be written to disk or shown again: every finding replaced by its
    redacted preview (``[kind: N chars redacted]``)."""
    found = findings_in(text, config)
    return redact_text(text, found) if text and found else text


def findings_level(findings: Sequence[Finding], config: PrivacyConfig) -> PrivacyLevel | None:
    """The level findings raise to (None when there are none): for an answer that holds a
    secret, so the conversation after it stays as private as the answer."""
    levels = {"secret": config.detectors.secrets, "pii": config.detectors.pii}
    return max((levels[f.category] for f in findings), default=None)


def redact_for_cloud(text: str, config: PrivacyConfig, salt: str) -> tuple[str, int]:
    """``text`` with every finding replaced by a stable placeholder (``[REDACTED github_token
    1a2b3c4d]``: the same secret gets the same placeholder for the same ``salt``, the
    conversation), and how many were replaced."""
    found = findings_in(text, config)
    if not found:
        return text, 0

    def placeholder(finding: Finding) -> str:
        return f"[REDACTED {finding.kind} {fingerprint(finding.text, salt)}]"

    return replace_findings(text, found, placeholder), len(found)
