"""Credential and PII detectors: true positives, near misses, and no leaks of what was found."""

from __future__ import annotations

import pytest

from ds4router.routing.detectors import DETECTOR_KINDS, iban_ok, luhn_ok, redact_text, scan

# Fake credentials in the real formats (assembled so no whole token sits in this file).
AWS_ID = "AKIA" + "IOSFODNN7Q2XZ4LM"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY4kQz9Lp2vW"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
GH_FINE = "github_pat_" + "11ABCDEFG0123456789abc" + "_" + "x" * 20 + "Y7k2" * 9 + "Q3m"
GITLAB = "glpat-" + "xY9kLm2Pq8RtZ4vW6nB1"
NPM = "npm_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
SLACK = "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"
SLACK_HOOK = "https://hooks.slack.com/services/" + "T0ABCDEFG/B0ABCDEFG/aBcDeFgHiJkLmNoPqRsTuVwX"
DISCORD = "https://discord.com/api/webhooks/" + "112233445566778899/" + "Ab-Cd_Ef" * 6
GOOGLE_OAUTH = "GOCSPX-" + "Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9B"
OPENAI = "sk-proj-" + "Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc2Df4Gh6Jk8"
ANTHROPIC = "sk-ant-api03-" + "Zx8Cv6Bn4Mq2We0Rt9Yu7Io5Pa3Sd1Fg-hJkLzXcVbNm_QwErTy"
GOOGLE = "AIza" + "SyD3kL9mN2pQ8rS5tU1vW7xY4zA6bC0dE9f"
STRIPE = "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"
SENDGRID = "SG." + "ngeVfQFYQlKU0ufo8x5d1A" + "." + "TwL2iGABf9DHoTf-09kqeF8tAmbihYzrnopKc-1s5cr"
TWILIO = "SK" + "0123456789abcdef0123456789abcdef"
MAILGUN = "key-" + "3ax6xnjp29jd6fds4gc373sgvjxteol0"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    + "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    + "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7v3Kq\n-----END RSA PRIVATE KEY-----"
OPENSSH = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----"
AZURE = (
    "DefaultEndpointsProtocol=https;AccountName=acme;"
    + "AccountKey=Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4==;EndpointSuffix=core.windows.net"
)

POSITIVES: list[tuple[str, str, str]] = [
    ("aws_access_key_id", f"id = {AWS_ID}", AWS_ID),
    ("aws_secret_access_key", f"aws_secret_access_key = {AWS_SECRET}", AWS_SECRET),
    ("aws_secret_access_key", f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", AWS_SECRET),
    ("aws_secret_access_key", f"here it is: {AWS_SECRET} thanks", AWS_SECRET),
    ("github_token", f"git clone https://x:{GH}@github.com/o/r", GH),
    ("github_token", f"token={GH_FINE}", GH_FINE),
    ("gitlab_token", f"CI uses {GITLAB}", GITLAB),
    ("npm_token", f"//registry.npmjs.org/:_authToken={NPM}", NPM),
    ("huggingface_token", f"login({HF!r})", HF),
    ("slack_token", f"SLACK={SLACK}", SLACK),
    ("slack_webhook", f"post to {SLACK_HOOK}", SLACK_HOOK),
    ("discord_webhook", f"hook {DISCORD}", DISCORD),
    ("google_oauth_secret", f"client_secret={GOOGLE_OAUTH}", GOOGLE_OAUTH),
    ("openai_key", f"client = OpenAI(api_key='{OPENAI}')", OPENAI),
    ("anthropic_key", f"ANTHROPIC_API_KEY={ANTHROPIC}", ANTHROPIC),
    ("google_api_key", f"key={GOOGLE}&q=x", GOOGLE),
    ("stripe_key", f"stripe.api_key = '{STRIPE}'", STRIPE),
    ("sendgrid_key", f"SENDGRID={SENDGRID}", SENDGRID),
    ("twilio_key", f"twilio key {TWILIO}", TWILIO),
    ("mailgun_key", f"auth=('api', '{MAILGUN}')", MAILGUN),
    ("jwt", f"Authorization: Bearer {JWT}", JWT),
    ("private_key", f"key:\n{PEM}\n", PEM),
    ("private_key", OPENSSH, OPENSSH),
    ("connection_string", AZURE, AZURE.split(";EndpointSuffix")[0]),
    (
        "url_password",
        "DATABASE_URL=postgres://billing:Tr0ub4dor-3x@db.internal:5432/app",
        "Tr0ub4dor-3x",
    ),
    (
        "password_assignment",
        'db_password = "correct horse battery staple"',
        "correct horse battery staple",
    ),
    ("password_assignment", "SMTP_PASSWORD=Xk9#mQ2!vL7p\n", "Xk9#mQ2!vL7p"),
    ("password_assignment", "redis:\n  password: 8fK2mQ9xLp3Z\n", "8fK2mQ9xLp3Z"),
    ("password_assignment", '{"client_secret": "9aZ3kQ8mW2pX7vL1"}', "9aZ3kQ8mW2pX7vL1"),
    ("email", "write to jane.doe@acme-corp.io today", "jane.doe@acme-corp.io"),
    ("phone", "call +1 415-555-0132 tomorrow", "+1 415-555-0132"),
    ("phone", "Tel: +44 20 7946 0958.", "+44 20 7946 0958"),
    ("payment_card", "card 4111 1111 1111 1111 exp 12/29", "4111 1111 1111 1111"),
    ("payment_card", "amex 378282246310005", "378282246310005"),
    ("payment_card", "4111 1111 1111 1111 12/29 cvc 123", "4111 1111 1111 1111"),
    ("payment_card", "ref 7 5555-5555-5555-4444 0", "5555-5555-5555-4444"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00", "DE89 3704 0044 0532 0130 00"),
    ("iban", "pay GB82WEST12345698765432 now", "GB82WEST12345698765432"),
    ("us_ssn", "SSN: 123-45-6789", "123-45-6789"),
    ("uk_nino", "NI number JG 10 37 23 A", "JG 10 37 23 A"),
]


@pytest.mark.parametrize(("kind", "text", "secret"), POSITIVES, ids=[p[0] for p in POSITIVES])
def test_finds_each_kind(kind: str, text: str, secret: str) -> None:
    findings = scan(text)
    assert [(f.kind, text[f.start : f.end]) for f in findings] == [(kind, secret)]


def test_every_kind_here_is_a_detector_kind() -> None:
    # The provider rules' kinds are covered by the red-team corpus (test_redteam.py).
    assert {kind for kind, _, _ in POSITIVES} <= set(DETECTOR_KINDS)


NEAR_MISSES = [
    # Code that handles credentials is not a credential.
    'def is_aws_key(value: str) -> bool:\n    return re.fullmatch(r"AKIA[0-9A-Z]{16}", value) is not None',
    'GITHUB_TOKEN_RE = re.compile(r"ghp_[A-Za-z0-9]{36}")',
    'password = request.form["password"]',
    "password = os.environ['DB_PASSWORD']",
    "token = get_token(user)",
    "def login(username: str, password: str) -> Token: ...",
    "password: str = Field(min_length=8)",
    'api_key = "<your api key here>"',
    "SECRET_KEY=${SECRET_KEY}",
    "token: null",
    "# rotate the secret: see the runbook",
    "password = self.password_hash",
    # Placeholders and test-only addresses.
    "mail noreply@example.com or admin@localhost",
    "git clone git@github.com:acme/billing.git",
    "postgres://user:${DB_PASS}@db/app",
    # Numbers that are not PII.
    "version 1.22.333.4444, released 2026-11-25",
    "card 4111 1111 1111 1112 fails Luhn",
    "order id 1234567890123456 is not a card (Luhn)",
    "IBAN DE89 3704 0044 0532 0130 01 (bad checksum)",
    "SSN 000-12-3456 and 666-12-3456 are never issued",
    "the SHA is 3f786850e387550fdab836ed7e6dc881de23001b",
    "uuid 123e4567-e89b-12d3-a456-426614174000",
    "sk-short",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_misses_are_not_findings(text: str) -> None:
    assert [(f.kind, f.text) for f in scan(text)] == []


def test_findings_never_carry_the_secret_in_output() -> None:
    text = f"aws {AWS_ID} and {GH} and mail jane@acme-corp.io"
    findings = scan(text)
    assert len(findings) == 3
    for finding in findings:
        for rendering in (str(finding), repr(finding), str(finding.to_dict()), finding.preview):
            assert finding.text not in rendering
            assert finding.text[4:12] not in rendering
    redacted = redact_text(text, findings)
    for secret in (AWS_ID, GH, "jane@acme-corp.io"):
        assert secret not in redacted
    assert "[github_token: 40 chars redacted]" in redacted


def test_allowlist_and_disabled_detectors() -> None:
    text = f"mail ops@acme-corp.io, key {AWS_ID}"
    assert {f.kind for f in scan(text, allowlist=[r"@acme-corp\.io$"])} == {"aws_access_key_id"}
    assert {f.kind for f in scan(text, disabled=["pii"])} == {"aws_access_key_id"}
    assert {f.kind for f in scan(text, disabled=["aws_access_key_id"])} == {"email"}


def test_overlaps_keep_the_most_specific_secret() -> None:
    text = f"export GITHUB_TOKEN={GH}"
    assert [f.kind for f in scan(text)] == ["github_token"]


def test_lines_are_reported() -> None:
    findings = scan(f"one\ntwo\nkey {AWS_ID}\n")
    assert findings[0].line == 3


def test_checksums() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82 WEST 1234 5698 7654 33")
