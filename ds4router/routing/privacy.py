"""The privacy level of a request: the maximum over everything that contributes.

Contributions: the project default, ``privacy.paths`` globs of attached files,
inline tags (``#secret`` ...; lowering below the default only when the project
sets ``allow_downgrade``), and the detectors' findings. Pure: the caller reads
files; this module only looks at text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ds4router.config.schema import PrivacyConfig
from ds4router.routing.detectors import Finding, scan
from ds4router.routing.levels import PrivacyLevel, max_level
from ds4router.routing.request import Attachment, privacy_tags


@dataclass(frozen=True)
class Contribution:
    source: str  # what raised (or set) the level, in words
    level: PrivacyLevel


@dataclass(frozen=True)
class FileFinding:
    """A finding and where it was: ``None`` for the request text, else the file path."""

    where: str | None
    finding: Finding

    def to_dict(self) -> dict[str, object]:
        out = self.finding.to_dict()
        out["where"] = self.where or "text"
        return out


@dataclass(frozen=True)
class PrivacyResult:
    level: PrivacyLevel
    contributions: tuple[Contribution, ...]
    findings: tuple[FileFinding, ...]
    notes: tuple[str, ...] = ()


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


def classify_privacy(
    text: str, attachments: Sequence[Attachment], config: PrivacyConfig
) -> PrivacyResult:
    default = config.default
    contributions = [Contribution("project default (privacy.default)", default)]
    notes: list[str] = []

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

    for attachment in attachments:
        for rule in config.paths:
            if glob_match(attachment.path, rule.glob):
                contributions.append(
                    Contribution(
                        f"file {attachment.path} (privacy.paths {rule.glob!r})", rule.level
                    )
                )

    findings: list[FileFinding] = []
    sources: list[tuple[str | None, str]] = [(None, text)]
    sources += [(a.path, a.text) for a in attachments]
    levels = {"secret": config.detectors.secrets, "pii": config.detectors.pii}
    for where, body in sources:
        for finding in scan(body, allowlist=config.allowlist, disabled=config.detectors.disabled):
            findings.append(FileFinding(where, finding))
            place = f"{where}:{finding.line}" if where else f"line {finding.line}"
            contributions.append(
                Contribution(f"detector {finding.kind} ({place})", levels[finding.category])
            )

    level = max_level(*(c.level for c in contributions[1:]), base)
    return PrivacyResult(level, tuple(contributions), tuple(findings), tuple(notes))
