"""What a scan finds: ``Finding``, its redacted preview, and text with findings replaced.

The matched text is kept only on the in-memory finding (an allowlist needs it,
and redaction needs to know which findings are the same secret); it is never
part of ``str()``, ``repr()``, ``to_dict()``, a preview or a message. ``why``
says what made it a finding (the rule, the entropy of the value, the context it
was seen in), in words that hold nothing of the value.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Category = Literal["secret", "pii"]


@dataclass(frozen=True)
class Finding:
    kind: str
    category: Category
    start: int
    end: int
    line: int
    text: str = field(repr=False, compare=False)
    rule: str = ""  # the rule id in credentials.toml, or the generic detector's name
    why: str = ""  # context and entropy, never the value

    @property
    def preview(self) -> str:
        return redact(self.kind, self.end - self.start)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "category": self.category,
            "start": self.start,
            "end": self.end,
            "line": self.line,
            "preview": self.preview,
            "rule": self.rule or self.kind,
            "why": self.why,
        }

    def __str__(self) -> str:
        return f"{self.kind} at line {self.line}: {self.preview}"


def redact(kind: str, length: int) -> str:
    """A preview that says what was found and how long it is, and nothing of it."""
    return f"[{kind}: {length} chars redacted]"


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``'s own character distribution."""
    if not value:
        return 0.0
    counts: dict[str, int] = {}
    for char in value:
        counts[char] = counts.get(char, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def redact_text(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with every finding replaced by its preview (for history, logs and errors)."""
    return replace_findings(text, findings, lambda f: f.preview)


def replace_findings(
    text: str, findings: Sequence[Finding], render: Callable[[Finding], str]
) -> str:
    out: list[str] = []
    last = 0
    for finding in sorted(findings, key=lambda f: f.start):
        if finding.start < last:  # overlapping views of one secret: covered already
            continue
        out.append(text[last : finding.start])
        out.append(render(finding))
        last = finding.end
    out.append(text[last:])
    return "".join(out)


def fingerprint(value: str, salt: str) -> str:
    """A short stable name for a value within one conversation (``salt``): the same
    secret gets the same placeholder, and the placeholder reveals nothing of it."""
    return hashlib.blake2b(value.encode(), key=salt.encode()[:64], digest_size=4).hexdigest()
