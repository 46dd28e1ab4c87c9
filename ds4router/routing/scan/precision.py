"""What looks like a credential or personal data and is not: the scan's precision.

A detector that cries wolf gets switched off, so these are never findings:
documented example keys (AWS's ``...EXAMPLE`` pair, the jwt.io sample token,
Stripe's documented test key and ``4242`` card), placeholders and references
(``your-key-here``, ``xxxx``, ``<token>``, ``${VAR}``, ``os.environ[...]``,
``{{ secrets.X }}``, sops' ``ENC[...]``), public keys and certificates,
lockfile and content hashes (``sha512-...``, ``sha256:...``), UUIDs and git SHAs
standing on their own.
"""

from __future__ import annotations

import re

from ds4router.routing.scan.findings import shannon_entropy

# The values providers publish in their documentation, exactly.
DOCUMENTED_EXAMPLES = frozenset({
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AKIAI44QH8DHBEXAMPLE",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwi"
    "aWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "pk_test_TYooMQauvdEDq54NiTphI7jx",
    "4242424242424242",
    "4000056655665556",
    "SG.xxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
})  # fmt: skip

_PLACEHOLDER = re.compile(
    r"""^(?:
        |(.)\1{2,}|[xX*.\-_#0]+|1234\w*|abc(?:123|def)?|<[^>]*>|\[[^\]]*\]|\$\{[^}]*\}|\$\([^)]*\)
        |\{\{[^}]*\}\}|\{[A-Za-z_][\w.\-]*\}|%\([^)]*\)s|%[A-Za-z_]\w*%|\$[A-Za-z_]\w*|\$\{\{.*\}\}
        |ENC\[.*\]|vault:.*|arn:aws:secretsmanager:.*|!vault.*|ref\+.*|op://.*|sm://.*
        |(?:your|insert|enter|put|replace|add)[-_ ]?\w*(?:[-_ ]\w+)*
        |(?:my|the|some|a|an)[-_ ][A-Za-z]+(?:[-_ ][A-Za-z]+)*
        |\w*(?:here|example|placeholder|changeme|change[-_]me|dummy|redacted|xxx|sample|fake
            |notreal|not[-_]a[-_]real|todo|fixme|tbd|masked|hidden|replace[-_]?me|secret[-_]?here
            |goes[-_]here|value)\w*
        |none|null|nil|true|false|undefined|required|optional|string|str|bytes|int|secret
        |password|passwd|token|env|test|testing|foo|bar|baz|foobar|qux|user|username
        |empty|blank|n/?a|tbd|\.\.\.|…
        |os\.environ.*|process\.env.*|getenv.*|env\(.*|settings\..*|config\..*|self\..*|this\..*
        |secrets\..*|vars\..*|params\..*|args\..*|options\..*|ctx\..*|context\..*|request\..*
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_HASH_VALUE = re.compile(
    r"^(?:sha(?:1|224|256|384|512)[-:][A-Za-z0-9+/=_\-]{20,}|md5[-:][A-Fa-f0-9]{32}"
    r"|[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
    r"-[0-9a-fA-F]{12})$"
)


def is_placeholder(value: str) -> bool:
    """A value that stands for a credential without being one (or a reference to one)."""
    value = value.strip().strip("'\"`")
    if not value or value in DOCUMENTED_EXAMPLES or _PLACEHOLDER.match(value):
        return True
    lowered = value.lower()
    return "example" in lowered or lowered.endswith(("_here", "-here", "xxxx", "****"))


def is_content_hash(value: str) -> bool:
    """A lockfile integrity, a content digest, a git SHA or a UUID: an identifier, not a secret."""
    return _HASH_VALUE.match(value) is not None


_TEMPLATE_WORDS = re.compile(r"example|placeholder|your|redacted|dummy|fake|sample|changeme", re.I)


def benign_token(value: str) -> bool:
    """A provider-shaped token that is a template: documented, worded, or one repeated
    character after its prefix (``sk-xxxxxxxx...``, ``ghp_XXXX...``)."""
    if value in DOCUMENTED_EXAMPLES or _TEMPLATE_WORDS.search(value):
        return True
    body = re.split(r"[_\-.]", value, maxsplit=1)[-1]
    return len(set(body)) <= 2 or shannon_entropy(value) < 2.5


def benign(kind: str, value: str) -> bool:
    """Whether a value a detector matched is one of the known non-findings above."""
    compact = re.sub(r"[\s\-.]", "", value) if kind == "payment_card" else value
    if compact in DOCUMENTED_EXAMPLES or value in DOCUMENTED_EXAMPLES:
        return True
    if kind in ("email", "phone", "iban", "payment_card", "national_id", "us_ssn", "uk_nino"):
        return False
    if kind == "private_key":
        return False
    return is_placeholder(value) or is_content_hash(value)
