"""Detectors for credentials and personal data in request text.

Each detector yields ``Finding``s: the kind, the category (``secret`` or
``pii``), the span, and a redacted preview that holds none of the matched
characters. The matched text itself is kept only on the in-memory finding, so
an allowlist can be applied; it is never part of ``str()``, ``repr()``,
``to_dict()`` or any message.

Detectors are regexes with cheap prefilters (a literal that must be present)
plus validation where a format has a checksum (Luhn for cards, mod 97 for
IBAN) or a notion of a trivial value (placeholders are not passwords).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
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
        }

    def __str__(self) -> str:
        return f"{self.kind} at line {self.line}: {self.preview}"


def redact(kind: str, length: int) -> str:
    """A preview that says what was found and how long it is, and nothing of it."""
    return f"[{kind}: {length} chars redacted]"


Validator = Callable[[re.Match[str]], bool]


@dataclass(frozen=True)
class Detector:
    kind: str
    category: Category
    pattern: re.Pattern[str]
    # At least one must occur (case-sensitive) for a scan; when ``anchored``, every
    # match starts with one of them, and only those places are tried.
    prefilter: tuple[str, ...] = ()
    anchored: bool = False
    token: bool = False  # a token of [A-Za-z0-9_.-]: found through _scan_tokens
    groups: tuple[int | str, ...] = (0,)  # the first that matched is the sensitive value
    validate: Validator | None = None
    # Characters that may not stand right before a match. Checked here rather than
    # by a look-behind, which would cost the regex engine its fast literal search.
    not_after: frozenset[str] = frozenset()

    def scan(self, text: str) -> Iterator[tuple[int, int]]:
        if self.anchored:
            yield from self._scan_anchored(text)
            return
        if self.prefilter and not any(p in text for p in self.prefilter):
            return
        for match in self.pattern.finditer(text):
            span = self._accept(text, match)
            if span is not None:
                yield span

    def _scan_anchored(self, text: str) -> Iterator[tuple[int, int]]:
        """Try the pattern only where one of its literal prefixes occurs (str.find is fast)."""
        for literal in self.prefilter:
            pos = text.find(literal)
            while pos != -1:
                match = self.pattern.match(text, pos)
                span = None if match is None else self._accept(text, match)
                if span is not None:
                    yield span
                    pos = text.find(literal, max(span[1], pos + 1))
                else:
                    pos = text.find(literal, pos + 1)

    def _accept(self, text: str, match: re.Match[str]) -> tuple[int, int] | None:
        begin = match.start()
        if begin > 0 and text[begin - 1] in self.not_after:
            return None
        if self.validate is not None and not self.validate(match):
            return None
        for group in self.groups:
            start, end = match.span(group)
            if start >= 0:
                return start, end
        return None


# --- validators ---------------------------------------------------------------


def shannon_entropy(value: str) -> float:
    if not value:
        return 0.0
    counts: dict[str, int] = {}
    for char in value:
        counts[char] = counts.get(char, 0) + 1
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_CARD_PREFIX = re.compile(
    r"^(4\d{12}(\d{3}){0,2}"  # Visa 13/16/19
    r"|5[1-5]\d{14}|2(2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|6(011|5\d\d|4[4-9]\d)\d{12,15}"  # Discover
    r"|35(2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|3(0[0-5]|[689]\d)\d{11,16}"  # Diners
    r"|(5018|5020|5038|56|57|58|6304|6759|676[1-3])\d{8,15})$"  # Maestro
)


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30,
    "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(raw: str) -> bool:
    iban = raw.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


_PLACEHOLDER = re.compile(
    r"""^(
        |x+|\*+|\.+|-+|_+|\#+|0+|1234\w*|<[^>]*>|\$\{[^}]*\}|\$\([^)]*\)|\{\{[^}]*\}\}|%\([^)]*\)s
        |\$[A-Za-z_]\w*|%[A-Za-z_]\w*%
        |your[-_ ]?\w*|\w*(here|example|placeholder|changeme|dummy|redacted|xxx)\w*
        |none|null|nil|true|false|undefined|required|optional|string|str|bytes|int|secret|password
        |token|env|os\.environ.*|process\.env.*|getenv.*|settings\..*|config\..*|self\..*
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


def nontrivial_secret(value: str) -> bool:
    """A literal that looks like a real credential rather than a name or placeholder."""
    value = value.strip()
    if len(value) < 6 or _PLACEHOLDER.match(value):
        return False
    if any(c in value for c in "()[]"):  # a call or subscript: code, not a literal
        return False
    return shannon_entropy(value) >= 2.5


def _url_password_ok(match: re.Match[str]) -> bool:
    return nontrivial_secret(match.group("pw")) and match.group("pw") != match.group("user")


def _phone_ok(match: re.Match[str]) -> bool:
    raw = match.group(0)
    digits = re.sub(r"\D", "", raw)
    if not 10 <= len(digits) <= 15:
        return False
    if re.fullmatch(r"\d{4}[-./]\d{2}[-./]\d{2}.*", raw.lstrip("+(")):  # a date
        return False
    return len(set(digits)) > 2


_EXAMPLE_DOMAIN = re.compile(r"(^|\.)(example\.(com|org|net)|test|invalid|localhost)$", re.I)


# --- the catalogue ------------------------------------------------------------

_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_E = r"(?![A-Za-z0-9_\-])"  # token end


def _secret(
    kind: str,
    pattern: str,
    prefilter: Sequence[str] = (),
    *,
    groups: tuple[int | str, ...] = (0,),
    validate: Validator | None = None,
    not_after: frozenset[str] = _WORD,
    anchored: bool = True,
    token: bool = False,
) -> Detector:
    return Detector(
        kind,
        "secret",
        re.compile(pattern),
        tuple(prefilter),
        anchored,
        token,
        groups,
        validate,
        not_after,
    )


DETECTORS: tuple[Detector, ...] = (
    _secret(
        "private_key",
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
        r"[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        ["-----BEGIN "],
    ),
    _secret(
        "aws_access_key_id",
        r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}" + _E,
        ["AKIA", "ASIA", "ABIA", "ACCA"],
        token=True,
    ),
    _secret(
        "github_token",
        r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}" + _E,
        ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        token=True,
    ),
    _secret(
        "github_token",
        r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}" + _E,
        ["github_pat_"],
        token=True,
    ),
    _secret(
        "gitlab_token",
        r"gl(?:pat|dt|ptt|rt|cbt|oas)-[A-Za-z0-9_\-]{20,}" + _E,
        ["glpat-", "gldt-", "glptt-", "glrt-", "glcbt-", "gloas-"],
        token=True,
    ),
    _secret("npm_token", r"npm_[A-Za-z0-9]{36}" + _E, ["npm_"], token=True),
    _secret("huggingface_token", r"hf_[A-Za-z0-9]{30,40}" + _E, ["hf_"], token=True),
    _secret("slack_token", r"xox[abposr]-[A-Za-z0-9\-]{10,}" + _E, ["xox"], token=True),
    _secret(
        "slack_webhook",
        r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{20,}",
        ["https://hooks.slack.com/"],
    ),
    _secret(
        "discord_webhook",
        r"https://(?:\w+\.)?discord(?:app)?\.com/api/webhooks/\d+/[A-Za-z0-9_\-]{30,}",
        ["discord"],
        anchored=False,
    ),
    _secret("anthropic_key", r"sk-ant-[A-Za-z0-9_\-]{20,}" + _E, ["sk-ant-"], token=True),
    _secret(
        "openai_key",
        r"sk-(?!ant-)(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_\-]{20,}" + _E,
        ["sk-"],
        validate=lambda m: shannon_entropy(m.group(0)) >= 3.5,
        token=True,
    ),
    _secret("google_api_key", r"AIza[0-9A-Za-z_\-]{35}" + _E, ["AIza"], token=True),
    _secret("google_oauth_secret", r"GOCSPX-[A-Za-z0-9_\-]{28}" + _E, ["GOCSPX-"], token=True),
    _secret(
        "stripe_key",
        r"(?:sk|rk|whsec)_(?:live|test)_[A-Za-z0-9]{16,}" + _E,
        ["sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_live_", "whsec_test_"],
        token=True,
    ),
    _secret("stripe_key", r"whsec_[A-Za-z0-9]{24,}" + _E, ["whsec_"], token=True),
    _secret(
        "sendgrid_key", r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}" + _E, ["SG."], token=False
    ),
    _secret("twilio_key", r"SK[0-9a-fA-F]{32}" + _E, ["SK"], token=True),
    _secret("mailgun_key", r"key-[0-9a-zA-Z]{32}" + _E, ["key-"], token=True),
    _secret(
        "jwt",
        r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}" + _E,
        ["eyJ"],
        token=False,
    ),
    _secret(
        "connection_string",
        r"(?:DefaultEndpointsProtocol=\w+;[^\s\"']*?AccountKey=|Endpoint=sb://[^\s;\"']+;"
        r"[^\s\"']*?SharedAccessKey=|AccountEndpoint=https://[^\s;\"']+;AccountKey=)"
        r"[A-Za-z0-9+/=]{20,}",
        ["DefaultEndpointsProtocol=", "Endpoint=sb://", "AccountEndpoint="],
    ),
    _secret(
        "url_password",
        r"\b[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://(?P<user>[^\s/:@'\"]{1,64}):(?P<pw>[^\s/@'\"]{3,128})@"
        r"[A-Za-z0-9.\-\[\]]+",
        ["://"],
        anchored=False,
        groups=("pw",),
        validate=_url_password_ok,
    ),
)

# --- scanners that need more than one regex pass -------------------------------
# A regex that cannot start with a literal costs the engine a try at every
# position; these find rare anchors first ('@', digits, key words) and only then
# look closely.


def _runs(text: str, table: bytes, min_len: int) -> Iterator[tuple[int, int]]:
    """Spans of runs of the characters ``table`` maps to 'a', at least ``min_len`` long.

    Translating to bytes and searching with ``bytes.find`` is far faster than a
    regex that would have to try every position.
    """
    raw = text.encode("ascii", "replace")  # one byte a code point, offsets kept
    mapped = raw.translate(table)
    needle = b"a" * min_len
    pos = mapped.find(needle)
    while pos != -1:
        end = pos + min_len
        while end < len(mapped) and mapped[end] == 97:
            end += 1
        yield pos, end
        pos = mapped.find(needle, end)


def _table(chars: str) -> bytes:
    return bytes(97 if chr(i) in chars else 32 for i in range(256))


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_B64_TABLE = _table(_ALNUM + "/+")
_TOKEN_TABLE = _table(_ALNUM + "_-")
_DIGIT_TABLE = _table("0123456789")
_TOKEN_MIN = 15  # every token format below is at least this long


def _scan_tokens(text: str, detectors: Sequence[Detector]) -> Iterator[tuple[Detector, int, int]]:
    """Token-shaped credentials: tried only where a long run of token characters starts.

    A match may not follow a token character (``Detector.not_after``), so it can
    only begin where a run begins.
    """
    by_prefix: dict[str, list[tuple[str, Detector]]] = {}
    for detector in detectors:
        for literal in detector.prefilter:
            by_prefix.setdefault(literal[:2], []).append((literal, detector))
    for start, _end in _runs(text, _TOKEN_TABLE, _TOKEN_MIN):
        for literal, detector in by_prefix.get(text[start : start + 2], ()):
            if text.startswith(literal, start):
                match = detector.pattern.match(text, start)
                span = None if match is None else detector._accept(text, match)
                if span is not None:
                    yield detector, span[0], span[1]


def _scan_bare_aws_secret(text: str) -> Iterator[tuple[str, int, int]]:
    for start, end in _runs(text, _B64_TABLE, 40):
        if end - start != 40 or (end < len(text) and text[end] == "="):
            continue
        value = text[start:end]
        if (
            any(c.islower() for c in value)
            and any(c.isupper() for c in value)
            and any(c.isdigit() for c in value)
            and any(c in "/+" for c in value)
            and shannon_entropy(value) >= 4.3
        ):
            yield "aws_secret_access_key", start, end


_KEY_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")
_ASSIGNMENT = re.compile(
    r"[A-Za-z0-9_\-.]*['\"]?[ \t]*(?::=|=>|=|:)[ \t]*"
    r"(?:\"(?P<q1>[^\"\n]{1,200})\"|'(?P<q2>[^'\n]{1,200})'|(?P<bare>[^\s'\",;]{1,200}))"
)
_IDENT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def _scan_assignments(text: str) -> Iterator[tuple[str, int, int]]:
    """``password = "..."``, ``API_TOKEN=...``, ``secret: ...`` with a non-trivial value."""
    lower = text.lower()
    starts: set[int] = set()
    for word in _KEY_WORDS:
        pos = lower.find(word)
        while pos != -1:
            starts.add(pos)
            pos = lower.find(word, pos + len(word))
    seen_values: set[int] = set()
    for pos in sorted(starts):
        match = _ASSIGNMENT.match(text, pos)
        if match is None:
            continue
        # The key must be the identifier just before the operator (not a comment word).
        begin = pos
        while begin > 0 and text[begin - 1] in _IDENT:
            begin -= 1
        if begin > 0 and text[begin - 1] not in " \t\n\r\"'{(,;[$&":
            continue
        quoted = match.group("q1") or match.group("q2")
        if quoted is not None:
            ok = nontrivial_secret(quoted)
        else:
            bare = match.group("bare") or ""
            looks_like_name = re.fullmatch(
                r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", bare
            ) and not any(c.isdigit() for c in bare)
            ok = not looks_like_name and len(bare) >= 8 and nontrivial_secret(bare)
        if not ok:
            continue
        group = "q1" if match.group("q1") else "q2" if match.group("q2") else "bare"
        start, end = match.span(group)
        if start in seen_values:
            continue
        seen_values.add(start)
        key = lower[begin:pos]
        is_aws = "aws" in key and end - start == 40
        yield ("aws_secret_access_key" if is_aws else "password_assignment"), start, end


_EMAIL_DOMAIN = re.compile(r"@(?P<domain>[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24})\b")
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")


def _scan_email(text: str) -> Iterator[tuple[str, int, int]]:
    if "@" not in text:
        return
    for match in _EMAIL_DOMAIN.finditer(text):
        at = match.start()
        begin = at
        while begin > 0 and at - begin < 64 and text[begin - 1] in _EMAIL_LOCAL:
            begin -= 1
        local = text[begin:at].lstrip(".")
        begin = at - len(local)
        if not local or local.lower() == "git":
            continue
        if _EXAMPLE_DOMAIN.search(match.group("domain")):
            continue
        yield "email", begin, match.end()


# One pass finds runs of digits with separators (and the letters of an IBAN); the
# precise formats are then matched inside each run only.
_NUMBER_RUN = re.compile(r"\d[\dA-Z \-.()/]{5,}[\dA-Z]")
_NINO = re.compile(
    r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
)
_CARD = re.compile(r"\d(?:[ \-]?\d){12,18}")
_SSN = re.compile(r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}")
_PHONE = re.compile(
    r"(?:\+[1-9]\d{0,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{2,4}(?:[ .\-]\d{2,4}){2,4}"
)
_IBAN = re.compile(r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?")
_NUM_EDGE = frozenset("0123456789-")
_WORDISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _bounded(text: str, start: int, end: int, edge: frozenset[str]) -> bool:
    return (start == 0 or text[start - 1] not in edge) and (
        end == len(text) or text[end] not in edge
    )


def _card_within(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The longest valid card number made of whole digit groups inside a run.

    A run may hold more than the card ("4111 1111 1111 1111 12/29" reads on into
    the expiry), so every group boundary is a candidate start and end.
    """
    groups = [m.span() for m in re.finditer(r"\d+", text[start:end])]
    best: tuple[int, int] | None = None
    for i in range(len(groups)):
        for j in range(len(groups) - 1, i - 1, -1):
            s, e = start + groups[i][0], start + groups[j][1]
            if best is not None and e - s <= best[1] - best[0]:
                break
            digits = re.sub(r"[ -]", "", text[s:e])
            if 13 <= len(digits) <= 19 and _bounded(text, s, e, _NUM_EDGE):
                if _CARD_PREFIX.match(digits) and luhn_ok(digits):
                    best = (s, e)
    return best


def _phone_bounded(text: str, start: int, end: int) -> bool:
    """Not part of a longer number, version or path; a sentence's full stop may follow."""
    if start > 0 and text[start - 1] in _WORDISH | {".", "-", "/", "+"}:
        return False
    if end < len(text):
        nxt = text[end]
        if nxt in _WORDISH or nxt == "/":
            return False
        if nxt in ".-" and end + 1 < len(text) and text[end + 1].isdigit():
            return False
    return True


_NUMBER_LEAD = frozenset("0123456789 -.()/+")


def _number_runs(text: str) -> Iterator[re.Match[str]]:
    """Runs of digits and separators, found from their first pair of adjacent digits.

    Every format below has two digits side by side somewhere; ``bytes.find`` finds
    those pairs far faster than a regex that tries every digit of a code listing.
    """
    mapped = text.encode("ascii", "replace").translate(_DIGIT_TABLE)
    pos = mapped.find(b"aa")
    while pos != -1:
        begin = pos  # walk back over a short lead such as "+1 " or "(0) "
        while begin > 0 and pos - begin < 6 and text[begin - 1] in _NUMBER_LEAD:
            begin -= 1
        while begin < pos and not text[begin].isdigit():
            begin += 1
        match = _NUMBER_RUN.match(text, begin) or _NUMBER_RUN.match(text, pos)
        if match is not None:
            yield match
            pos = mapped.find(b"aa", match.end())
        else:
            pos = mapped.find(b"aa", pos + 2)


def _scan_numbers(text: str) -> Iterator[tuple[str, int, int]]:
    for run in _number_runs(text):
        lo = max(0, run.start() - 3)  # room for '+', '(' and an IBAN's country code
        hi = run.end()
        for match in _IBAN.finditer(text, lo, hi):
            if _bounded(text, match.start(), match.end(), _WORDISH) and iban_ok(match.group(0)):
                yield "iban", match.start(), match.end()
        for match in _CARD.finditer(text, lo, hi):
            span = _card_within(text, match.start(), match.end())
            if span is not None:
                yield "payment_card", span[0], span[1]
        for match in _NINO.finditer(text, lo, hi):
            if _bounded(text, match.start(), match.end(), _WORDISH):
                yield "uk_nino", match.start(), match.end()
        for match in _SSN.finditer(text, lo, hi):
            if _bounded(text, match.start(), match.end(), _NUM_EDGE):
                yield "us_ssn", match.start(), match.end()
        for match in _PHONE.finditer(text, lo, hi):
            if _phone_bounded(text, match.start(), match.end()) and _phone_ok(match):
                yield "phone", match.start(), match.end()


Scanner = Callable[[str], Iterator[tuple[str, int, int]]]
_SCANNERS: tuple[tuple[Category, tuple[str, ...], Scanner], ...] = (
    ("secret", ("aws_secret_access_key",), _scan_bare_aws_secret),
    ("secret", ("password_assignment", "aws_secret_access_key"), _scan_assignments),
    ("pii", ("email",), _scan_email),
    ("pii", ("iban", "payment_card", "uk_nino", "us_ssn", "phone"), _scan_numbers),
)

DETECTOR_KINDS: tuple[str, ...] = tuple(
    sorted({d.kind for d in DETECTORS} | {k for _, kinds, _ in _SCANNERS for k in kinds})
)
_PRIORITY = {kind: i for i, kind in enumerate([d.kind for d in DETECTORS])}


def scan(
    text: str,
    *,
    allowlist: Iterable[str] = (),
    disabled: Iterable[str] = (),
) -> list[Finding]:
    """All findings in ``text``; of overlapping ones, the secret and the more specific wins."""
    allow = [re.compile(p) for p in allowlist]
    off = set(disabled)
    spans: list[tuple[int, int, str, Category]] = []
    active = [d for d in DETECTORS if d.kind not in off and d.category not in off]
    for detector in active:
        if not detector.token:
            spans.extend((s, e, detector.kind, detector.category) for s, e in detector.scan(text))
    tokens = [d for d in active if d.token]
    spans.extend((s, e, d.kind, d.category) for d, s, e in _scan_tokens(text, tokens))
    for category, kinds, scanner in _SCANNERS:
        if category in off or all(kind in off for kind in kinds):
            continue
        spans.extend((s, e, kind, category) for kind, s, e in scanner(text) if kind not in off)
    if allow:
        spans = [sp for sp in spans if not any(p.search(text[sp[0] : sp[1]]) for p in allow)]
    spans.sort(key=lambda sp: (sp[3] != "secret", _PRIORITY.get(sp[2], 99), sp[0] - sp[1], sp[0]))
    kept: list[tuple[int, int, str, Category]] = []
    for span in spans:
        if any(span[0] < k[1] and span[1] > k[0] for k in kept):
            continue
        kept.append(span)
    kept.sort()
    return [
        Finding(kind, category, s, e, text.count("\n", 0, s) + 1, text[s:e])
        for s, e, kind, category in kept
    ]


def redact_text(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with every finding replaced by its preview (for logs and errors)."""
    out: list[str] = []
    last = 0
    for finding in sorted(findings, key=lambda f: f.start):
        out.append(text[last : finding.start])
        out.append(finding.preview)
        last = finding.end
    out.append(text[last:])
    return "".join(out)
