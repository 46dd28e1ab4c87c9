"""Credentials known by their context rather than their shape.

- assignments: ``password = "..."``, ``API_TOKEN=...``, ``secret: ...``, XML elements
  (Maven ``settings.xml``), where the key names a credential and the value is a
  literal that is not a placeholder, a name or a reference;
- command lines: ``--password X``, ``-p`` of the commands that take a password
  there (``docker login``, ``sshpass``, ``mysql -pX``), ``curl -u user:pass``,
  ``kubectl --from-literal``, ``openssl pass:``;
- URL user-info (``scheme://user:pass@host``) and HTTP auth headers (Basic, Bearer,
  API-key headers);
- credential files: ``.netrc``, ``.pgpass``, Docker ``config.json`` auths, kubeconfig
  key data, and prose (``the password is ...``);
- private-key bodies without their armour (DER structure of a private key in base64,
  an OpenSSH key body), and base64 of a PEM private key.

Each scanner yields ``(kind, start, end, why)``; ``why`` names the context.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

from ds4router.routing.scan.findings import shannon_entropy
from ds4router.routing.scan.keywords import KeywordIndex, register
from ds4router.routing.scan.precision import is_placeholder

Hit = tuple[str, int, int, str]

# --- assignments --------------------------------------------------------------------------

_STRONG = frozenset({"password", "passwd", "pwd", "pass", "passphrase", "passcode", "secret",
                     "passwort", "kennwort", "contrasena", "senha", "parola", "wachtwoord",
                     "haslo", "salasana", "losenord"})  # fmt: skip
_WEAK = frozenset({"token", "auth", "credential", "credentials", "apikey", "pat", "sas",
                   "authtoken", "accesstoken", "privatekey", "secretkey", "accesskey", "signature",
                   "sig", "dsn", "connectionstring", "connstr", "bearer", "cookie",
                   "session"})  # fmt: skip
_KEY_QUALIFIERS = frozenset({"api", "access", "secret", "private", "signing", "encryption",
                             "master", "client", "account", "auth", "app", "license", "shared",
                             "storage", "service", "admin", "root", "deploy", "ssh", "gpg", "aws",
                             "hmac", "jwt", "webhook", "subscription", "consumer"})  # fmt: skip
# Words that make a credential-looking key name something else: where a token is
# fetched, how long a password must be, which key of a table.
_NOT_SECRET = frozenset({"endpoint", "url", "uri", "path", "file", "filename", "name", "id",
                         "type", "length", "len", "size", "field", "header", "method", "format",
                         "expiry", "expires", "expiration", "ttl", "timeout", "count", "env",
                         "var", "ref", "policy", "hint", "prompt", "label", "mode", "required",
                         "enabled", "algorithm", "alg", "scheme", "kind", "version", "prefix",
                         "pattern", "regex", "re", "min", "max", "rotation", "reset", "dir",
                         "location", "provider", "store", "manager", "class", "handler", "key_id",
                         "keyid", "usage", "limit", "rate", "strength", "placeholder",
                         "help", "description", "column", "col", "attr", "param", "arg", "flag",
                         "option", "setting", "source", "issuer", "audience", "scope", "scopes",
                         "grant", "response", "request", "validator", "error", "message", "msg",
                         "text", "title", "primary", "foreign", "sort", "partition", "cache",
                         "lookup", "row", "unique", "composite", "natural", "surrogate",
                         "idempotency", "hot", "map", "dict", "public", "pub", "fingerprint",
                         "hash", "hashed", "digest", "salt", "bits", "index", "author",
                         "authority", "authorization", "authorize", "authorized", "authored",
                         "selector", "template", "generator", "factory"})  # fmt: skip
_ASSIGN = re.compile(
    r"(?P<key>[A-Za-z_][A-Za-z0-9_.\-]{0,80})(?P<q>['\"]?)[ \t]*(?::=|=>|\?=|=|:)[ \t]*"
    r"(?:\"(?P<q1>[^\"\n]{1,300})\"|'(?P<q2>[^'\n]{1,300})'|(?P<bare>[^\s'\",;{}\[\]]{1,300}))"
)
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_HINTS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "dsn", "cookie",
          "wort", "contras", "senha", "parola", "haslo", "salasana", "bearer")  # fmt: skip
register(_HINTS)
_NAME_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def key_strength(key: str) -> int:
    """2: the key names a password or secret; 1: a token or key; 0: not a credential."""
    words = [w.lower() for w in _WORDS.findall(key)]
    if not words or words[-1] in _NOT_SECRET or any(w in ("author", "authority") for w in words):
        return 0
    joined = "".join(words)
    if any(w in _STRONG for w in words) or joined.endswith(("password", "passwd", "secret")):
        return 2
    if any(w in _WEAK for w in words) or joined.endswith(("token", "apikey", "authkey")):
        return 1
    if words[-1] == "key" and (len(words) == 1 or words[-2] in _KEY_QUALIFIERS):
        return 1
    return 0


def value_ok(value: str, strength: int, quoted: bool) -> bool:
    """A literal that looks like a credential rather than a name, a reference or a placeholder."""
    value = value.strip()
    if len(value) < (6 if strength == 2 else 8) or is_placeholder(value):
        return False
    if any(c in value for c in "()[]") or value.startswith(("/", "./", "~/", "../", "http")):
        return False  # a call, a subscript, a path, a URL: code or configuration, not a secret
    if not quoted and _NAME_LIKE.fullmatch(value) and not any(c.isdigit() for c in value):
        return False  # a bare identifier or attribute (request.form, settings.KEY)
    if strength == 1:
        if " " in value or shannon_entropy(value) < 3.0:
            return False
        return any(c.isdigit() for c in value) or len(value) >= 16
    return shannon_entropy(value) >= 2.2


def scan_assignments(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    starts: set[int] = set()
    for pos in kw.positions(*_HINTS):
        begin = pos
        while begin > 0 and (lower[begin - 1].isalnum() or lower[begin - 1] in "_.-"):
            begin -= 1
        starts.add(begin)
    for begin in sorted(starts):
        match = _ASSIGN.match(text, begin)
        if match is None:
            continue
        strength = key_strength(match.group("key"))
        if strength == 0:
            continue
        group = next(g for g in ("q1", "q2", "bare") if match.group(g) is not None)
        if value_ok(match.group(group), strength, group != "bare"):
            start, end = match.span(group)
            kind = "password_assignment"
            if "aws" in match.group("key").lower() and end - start == 40:
                kind = "aws_secret_access_key"
            yield kind, start, end, f"assigned to {_key_words(match.group('key'))}"


def _key_words(key: str) -> str:
    # The key's name is safe to show (it names, it does not hold, the secret).
    return key if len(key) <= 40 else key[:37] + "..."


_XML = re.compile(
    r"<(?P<tag>password|passphrase|secret|token|apiKey|api_key|accessKey|secretKey|"
    r"clientSecret|privateKey|authToken|pass)>(?P<v>[^<\n]{4,300})</(?P=tag)>",
    re.IGNORECASE,
)


_XML_TAGS = register(
    f"<{t}>" for t in ("password", "passphrase", "secret", "token", "apikey", "api_key",
                        "accesskey", "secretkey", "clientsecret", "privatekey", "authtoken", "pass")
)  # fmt: skip


def scan_xml(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    for pos in kw.positions(*_XML_TAGS):
        match = _XML.match(text, pos)
        if match is None:
            continue
        value = match.group("v")
        if value_ok(value, 2, True) and not value.startswith("${"):
            yield (
                "password_assignment",
                match.start("v"),
                match.end("v"),
                (f"<{match.group('tag')}> element"),
            )


# --- command lines ------------------------------------------------------------------------

_VALUE = r"(?P<v>\"[^\"\n]{3,200}\"|'[^'\n]{3,200}'|[^\s'\"|;&<>]{3,200})"
_LONG_FLAG = re.compile(
    r"--(?P<flag>password|passwd|pass|token|api-key|apikey|api-token|secret|"
    r"auth-token|access-token|client-secret|secret-key|access-key|secret-access-key|"
    r"db-password|registry-password|docker-password|bearer-token|oauth-token|private-token|"
    r"admin-password|root-password|sasl-password|key-password|store-password|storepass|"
    r"keypass|http-password|proxy-password)(?:=|[ \t]+)" + _VALUE
)
_SHORT_FLAG = re.compile(
    r"(?P<cmd>docker|podman|nerdctl|buildah|skopeo|helm|sshpass|mongo|mongosh|mongodump|"
    r"mongorestore|twine|sqlcmd|bcp|zip|unzip|redis-cli|ldapsearch|ldapadd|ldapmodify|"
    r"ldapdelete|ldapwhoami|lftp|smbclient|rpcclient|az|influx|cqlsh|clickhouse-client|"
    r"keytool|jarsigner|pkcs12|net use)\b[^\n|;&]*?(?<![\w-])(?P<flag>-p|-P|-a|-w|-U|--pass)"
    r"(?:=|[ \t]+)" + _VALUE
)
_ATTACHED = re.compile(
    r"(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump|mysqlimport|mysqlsh|7z|7za|rar)\b"
    r"[^\n|;&]*?(?<![\w-])-p(?P<v>[^\s'\"|;&<>]{3,200})"
)
_USERPASS = re.compile(
    r"(?:curl|wget|http|httpie|lftp|ftp|svn|hg)\b[^\n|;&]*?(?<![\w-])(?:-u|--user|--proxy-user|"
    r"-U|--http-user)[ \t=]+(?P<q>['\"]?)(?P<user>[^\s:'\"]{1,64}):(?P<v>[^\s'\"]{3,200})(?P=q)"
)
_FROM_LITERAL = re.compile(r"--from-literal[= ](?P<k>[\w.\-]+)=" + _VALUE)
_OPENSSL = re.compile(r"(?<![\w-])(?:pass|env|file)?:?(?:-pass(?:in|out)?|-passin|-passout|"
                      r"-k)\s+pass:(?P<v>\S{3,200})")  # fmt: skip
_POSITIONAL = re.compile(
    r"(?:rabbitmqctl\s+(?:add_user|change_password)\s+\S+|htpasswd\s+-\w*b\w*\s+\S+\s+\S+|"
    r"mc\s+alias\s+set\s+\S+\s+\S+\s+\S+)\s+" + _VALUE,
    re.IGNORECASE,
)


def _unquote(match: re.Match[str], group: str = "v") -> tuple[str, int, int]:
    value = match.group(group)
    start, end = match.span(group)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1], start + 1, end - 1
    return value, start, end


_FLAG_WORDS = register(
    ["--pass", "--token", "--api", "--secret", "--auth", "--access", "--client-secret",
     "--db-pass", "--registry-pass", "--docker-pass", "--bearer", "--oauth", "--private-token",
     "--admin-pass", "--root-pass", "--sasl-pass", "--key-pass", "--store", "--keypass",
     "--http-pass", "--proxy-pass"]
)  # fmt: skip
_SHORT_CMDS = register(
    ["docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "sshpass", "mongo", "twine",
     "sqlcmd", "bcp", "zip", "unzip", "redis-cli", "ldapsearch", "ldapadd", "ldapmodify",
     "ldapdelete", "ldapwhoami", "lftp", "smbclient", "rpcclient", "az ", "influx", "cqlsh",
     "clickhouse-client", "keytool", "jarsigner", "net use"]
)  # fmt: skip
_ATTACHED_CMDS = register(["mysql", "mariadb", "7z", "rar"])
_USER_CMDS = register(["curl", "wget", "http ", "httpie", "lftp", "ftp ", "svn", "hg "])
_OTHER = register(["--from-literal", "pass:", "rabbitmqctl", "htpasswd", "mc alias"])


def _at_word_start(lower: str, pos: int) -> bool:
    return pos == 0 or not (lower[pos - 1].isalnum() or lower[pos - 1] in "_-")


def scan_command_lines(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    groups = (
        (_LONG_FLAG, _FLAG_WORDS, "command-line flag"),
        (_SHORT_FLAG, _SHORT_CMDS, "password flag of a command"),
        (_ATTACHED, _ATTACHED_CMDS, "password attached to -p"),
        (_USERPASS, _USER_CMDS, "user:password on a command line"),
        (_FROM_LITERAL, ("--from-literal",), "kubectl --from-literal"),
    )
    for pattern, words, why in groups:
        for pos in kw.positions(*words):
            if not _at_word_start(lower, pos):
                continue
            match = pattern.match(text, pos)
            if match is None:
                continue
            if pattern is _FROM_LITERAL and not key_strength(match.group("k")):
                if not _strong_value(_unquote(match)[0]):
                    continue
            value, start, end = _unquote(match)
            if value.startswith(("-", "$")) or not value_ok(value, 2, True):
                continue
            yield "password_flag", start, end, why
    for pos in kw.positions("pass:"):
        match = _OPENSSL.search(text, max(0, pos - 12), pos + 220)
        if match is not None:
            value, start, end = _unquote(match)
            if value_ok(value, 2, True):
                yield "password_flag", start, end, "openssl pass: argument"
    for pos in kw.positions("rabbitmqctl", "htpasswd", "mc alias"):
        match = _POSITIONAL.match(text, pos)
        if match is not None:
            value, start, end = _unquote(match)
            if value_ok(value, 2, True):
                yield "password_flag", start, end, "password argument of a command"


def _strong_value(value: str) -> bool:
    return len(value) >= 8 and shannon_entropy(value) >= 3.0 and any(c.isdigit() for c in value)


# --- URLs and headers ---------------------------------------------------------------------

_URL_USERINFO = re.compile(
    r"[a-zA-Z][a-zA-Z0-9+.\-]{1,20}://(?P<user>[^\s/:@'\"]{0,64}):(?P<pw>[^\s/@'\"]{3,200})@"
    r"[A-Za-z0-9.\-\[\]_]+"
)


register(["://"])


def scan_urls(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    for pos in kw.positions("://"):
        begin = pos
        while (
            begin > 0
            and pos - begin < 21
            and (text[begin - 1].isalnum() or text[begin - 1] in "+.-")
        ):
            begin -= 1
        match = _URL_USERINFO.match(text, begin)
        if match is None:
            continue
        pw = match.group("pw")
        if pw == match.group("user") or is_placeholder(pw) or pw.startswith("$"):
            continue
        if len(pw) < 4 or shannon_entropy(pw) < 1.5:
            continue
        yield "url_password", match.start("pw"), match.end("pw"), "password in a URL's user-info"


_AUTH_HEADER = re.compile(
    r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(?P<scheme>basic|bearer|token|digest|"
    r"apikey|api-key|sso-key|key|otoken|negotiate|ntlm|aws4-hmac-sha256)\s+(?P<v>[A-Za-z0-9+/=._~\-:,]{8,})"
)
_KEY_HEADER = re.compile(
    r"(?i)(?P<h>x-api-key|api-key|apikey|x-auth-token|x-access-token|private-token|"
    r"x-goog-api-key|ocp-apim-subscription-key|x-functions-key|x-vault-token|x-figma-token|"
    r"x-shopify-access-token|x-ms-token|x-csrf-token|x-api-token|x-app-key)[\"']?\s*:\s*"
    r"[\"']?(?P<v>[A-Za-z0-9+/=._~\-]{12,})"
)


_HEADER_NAMES = register(
    ["x-api-key", "api-key", "apikey", "x-auth-token", "x-access-token", "private-token",
     "x-goog-api-key", "ocp-apim-subscription-key", "x-functions-key", "x-vault-token",
     "x-figma-token", "x-shopify-access-token", "x-ms-token", "x-csrf-token", "x-api-token",
     "x-app-key", "authorization"]
)  # fmt: skip


def scan_headers(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    for pos in kw.positions("authorization"):
        match = _AUTH_HEADER.match(text, pos)
        if match is not None:
            value = match.group("v")
            scheme = match.group("scheme").lower()
            if scheme == "basic":
                if not _basic_ok(value):
                    continue
            elif is_placeholder(value) or value.startswith("$") or shannon_entropy(value) < 3.0:
                continue
            yield "http_auth", match.start("v"), match.end("v"), f"Authorization {scheme} header"
    for pos in kw.positions(*_HEADER_NAMES[:-1]):
        if not _at_word_start(lower, pos):
            continue
        match = _KEY_HEADER.match(text, pos)
        if match is not None:
            value = match.group("v")
            if is_placeholder(value) or value.startswith("$") or shannon_entropy(value) < 3.0:
                continue
            yield "http_auth", match.start("v"), match.end("v"), f"{match.group('h')} header"


def _basic_ok(value: str) -> bool:
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = decoded.decode("utf-8", "replace").partition(":")
    return bool(sep) and len(password) >= 3 and not is_placeholder(password)


# --- credential files and prose ------------------------------------------------------------

_NETRC = re.compile(r"(?:password|passwd|account)[ \t]+(?P<v>[^\s]{3,200})")
_PGPASS = re.compile(
    r"(?P<host>[^:\s#]+):(?:\d{1,5}|\*):[^:\s]+:[^:\s]+:(?P<v>[^\s]{3,200})$", re.M
)
_PGPASS_HINT = re.compile(r"[^:\s#]+:(?:\d{1,5}|\*):[^:\s]+:[^:\s]+:\S")
_PROSE_WORDS_AT = register(
    ["password", "passwd", "passphrase", "passcode", "pass code", "pwd", "pin code", "passwort",
     "kennwort", "mot de passe", "contraseña", "contrasena", "senha", "wachtwoord", "hasło",
     "haslo", "api key", "secret key", "access token", "token", "secret", "machine ", "pgpass"]
)  # fmt: skip
_PROSE_TAIL = re.compile(
    r"(?i)(?:[ \t]+[\w'’-]+){0,6}?[ \t]+(?:is now|is still|is|was|=|:|->|would be|will be|"
    r"ist|est|es|é|set to|changed to)[ \t]+[\"'`“‘]?(?P<v>[^\s\"'`”’]{4,120}?)[\"'`”’]?"
    r"(?=[\s,;!?)]|\.(?:\s|$)|$)"
)


def scan_credential_files(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    for pos in kw.positions("machine "):
        if _at_word_start(lower, pos):
            for match in _NETRC.finditer(text, pos, min(len(text), pos + 400)):
                if value_ok(match.group("v"), 2, True):
                    yield "password_assignment", *match.span("v"), ".netrc password"
    if "pgpass" in kw or _PGPASS_HINT.match(text):
        for match in _PGPASS.finditer(text):
            if "://" in match.group(0) or match.group("host").lower() in ("http", "https"):
                continue
            if value_ok(match.group("v"), 2, True):
                yield "password_assignment", *match.span("v"), ".pgpass line"
    for pos in kw.positions(*_PROSE_WORDS_AT[:-2]):
        if not _at_word_start(lower, pos):
            continue
        word_end = pos
        while word_end < len(lower) and (lower[word_end].isalpha() or lower[word_end] == " "):
            word_end += 1
            if lower[word_end - 1] == " ":
                word_end -= 1
                break
        match = _PROSE_TAIL.match(text, word_end)
        if match is None:
            continue
        value = match.group("v")
        if value.lower() in _PROSE_WORDS or not value_ok(value, 2, True):
            continue
        if value.rstrip(".,;:!?").isalpha() and (value.islower() or value.istitle()):
            continue  # "the password is documented": a word, not a password
        yield "password_prose", *match.span("v"), "a password in prose"


_PROSE_WORDS = frozenset({"required", "invalid", "incorrect", "wrong", "correct", "missing",
                          "expired", "empty", "optional", "stored", "hashed", "encrypted",
                          "the", "not", "too", "set", "in", "at", "on", "valid", "sent",
                          "generated", "rotated", "changed", "needed", "shown",
                          "hidden"})  # fmt: skip


# --- private keys without armour, and a bare AWS secret ---------------------------------------

_KEY_LEADS = ("MII", "MIG", "MH", "MC", "b3BlbnNzaC1rZXktdjE", "LS0tLS1CRUdJTi")
_KEY_BODY = re.compile(r"[A-Za-z0-9+/=\r\n \t]{60,}")
_B64_TABLE = bytes(
    97 if chr(i).isascii() and (chr(i).isalnum() or chr(i) in "/+") else 32 for i in range(256)
)


def scan_base64(text: str, lower: str, kw: KeywordIndex) -> Iterator[Hit]:
    """Runs of base64 of 40 characters and more: a private key body (a line of 64) or a
    40-character AWS secret."""
    from ds4router.routing.scan.rules import runs

    for start, end in runs(text, _B64_TABLE, 40):
        if text.startswith(_KEY_LEADS, start):
            match = _KEY_BODY.match(text, start)
            if match is not None and _private_key_der(match.group(0)):
                stop = match.end()
                while stop > start and text[stop - 1] in "\r\n \t=":
                    stop -= 1
                yield "private_key", start, stop, "private key body without its armour"
                continue
        if end - start == 40 and not (end < len(text) and text[end] == "="):
            value = text[start:end]
            if _aws_secret_shape(value):
                yield "aws_secret_access_key", start, end, "40-character AWS secret shape"


def _aws_secret_shape(value: str) -> bool:
    return (
        any(c.islower() for c in value)
        and any(c.isupper() for c in value)
        and any(c.isdigit() for c in value)
        and any(c in "/+" for c in value)
        and shannon_entropy(value) >= 4.3
    )


def _private_key_der(body: str) -> bool:
    """Whether base64 ``body`` decodes to a private key: DER with a version INTEGER first
    (PKCS#1, PKCS#8, SEC1; certificates and public keys start with a SEQUENCE), an
    OpenSSH key, or a PEM private key encoded once more."""
    compact = re.sub(r"\s+", "", body)
    head = compact[: (len(compact) // 4) * 4][:4096]
    try:
        raw = base64.b64decode(head)
    except (binascii.Error, ValueError):
        return False
    if raw.startswith(b"openssh-key-v1"):
        return True
    if raw.startswith(b"-----BEGIN"):
        return b"PRIVATE KEY" in raw[:80]
    if len(raw) < 48 or raw[0] != 0x30:
        return False
    i = 2 if raw[1] < 0x80 else 2 + (raw[1] & 0x7F)
    return raw[i : i + 3] in (b"\x02\x01\x00", b"\x02\x01\x01")
