"""Personal data, found by shape and confirmed by the validators of the field.

- phone numbers: ``phonenumbers`` (Google's libphonenumber data) decides whether a
  candidate is a valid number; an international number (``+`` or ``00``) counts on
  its own, a national one only after a word such as "phone" or "tel". IP addresses,
  dates, times and version numbers are never phones;
- IBANs (any case, grouped or not) and national identity numbers: ``python-stdnum``'s
  validators, checksums included. Formats that are distinctive when printed (a CPF
  ``000.000.000-00``, a Korean RRN, an Italian codice fiscale ...) count on their own;
  those that are just digits (a Dutch BSN, a PESEL) only after an identity word;
- payment cards: 13-19 digits with any separator, a known issuer prefix and Luhn;
- e-mail addresses, except at the RFC 2606 example domains.

Each scanner yields ``(kind, start, end, why)``.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

Hit = tuple[str, int, int, str]

# --- e-mail -------------------------------------------------------------------------------

_EMAIL_DOMAIN = re.compile(r"@(?P<domain>[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24})\b")
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_EXAMPLE_DOMAIN = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid|localhost|local)$", re.I
)
_FILE_TLD = re.compile(r"\.(?:png|jpe?g|gif|svg|webp|ico|bmp)$", re.I)
_NO_REPLY = frozenset({"git", "noreply", "no-reply", "donotreply", "do-not-reply", "mailer-daemon"})


def scan_email(text: str, lower: str, kw: object = None) -> Iterator[Hit]:
    if "@" not in text:
        return
    for match in _EMAIL_DOMAIN.finditer(text):
        at = match.start()
        begin = at
        while begin > 0 and at - begin < 64 and text[begin - 1] in _EMAIL_LOCAL:
            begin -= 1
        local = text[begin:at].lstrip(".")
        begin = at - len(local)
        domain = match.group("domain")
        if not local or local.lower() in _NO_REPLY or text.endswith("://", 0, begin):
            continue  # a URL's user name, not an address
        if _EXAMPLE_DOMAIN.search(domain) or _FILE_TLD.search(domain):
            continue
        yield "email", begin, match.end(), "e-mail address"


# --- numbers ------------------------------------------------------------------------------

_DIGIT_TABLE = bytes(97 if 48 <= i <= 57 else 32 for i in range(256))
_NUMBER_RUN = re.compile(r"\d[\dA-Z \-.()/]{5,}[\dA-Z]")
_NUMBER_LEAD = frozenset("0123456789 -.()/+")
_NUM_EDGE = frozenset("0123456789-")
_WORDISH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _number_runs(text: str) -> Iterator[re.Match[str]]:
    """Runs of digits and separators, found from their first pair of adjacent digits
    (``bytes.find`` finds those pairs far faster than a regex trying every digit)."""
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


def _bounded(text: str, start: int, end: int, edge: frozenset[str]) -> bool:
    return (start == 0 or text[start - 1] not in edge) and (
        end == len(text) or text[end] not in edge
    )


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
    r"|62\d{14,17}"  # UnionPay
    r"|(5018|5020|5038|56|57|58|6304|6759|676[1-3])\d{8,15})$"  # Maestro
)
_CARD = re.compile(r"\d(?:[ \-./]?\d){12,18}")


def _card_within(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The longest valid card number made of whole digit groups inside a run
    ("4111 1111 1111 1111 12/29" reads on into the expiry)."""
    groups = [m.span() for m in re.finditer(r"\d+", text[start:end])]
    best: tuple[int, int] | None = None
    for i in range(len(groups)):
        for j in range(len(groups) - 1, i - 1, -1):
            s, e = start + groups[i][0], start + groups[j][1]
            if best is not None and e - s <= best[1] - best[0]:
                break
            chunk = text[s:e]
            seps = set(re.sub(r"\d", "", chunk))
            if len(seps) > 1:  # one separator throughout, as a card is printed
                continue
            digits = re.sub(r"\D", "", chunk)
            if 13 <= len(digits) <= 19 and _bounded(text, s, e, _NUM_EDGE):
                if _CARD_PREFIX.match(digits) and luhn_ok(digits):
                    best = (s, e)
    return best


_IBAN = re.compile(
    r"[A-Z]{2}\d{2}(?:(?:[ \-][A-Z0-9]{4}){2,7}(?:[ \-][A-Z0-9]{1,3})?|[A-Z0-9]{11,30})"
    r"(?![A-Z0-9])",
    re.I,
)
_SSN = re.compile(r"(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}")
_NINO = re.compile(
    r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]"
)


@lru_cache(maxsize=1)
def _stdnum(name: str) -> Any:
    return importlib.import_module(f"stdnum.{name}")


def iban_ok(raw: str) -> bool:
    return bool(_stdnum("iban").is_valid(raw.upper()))


def scan_numbers(text: str, lower: str, kw: object = None) -> Iterator[Hit]:
    for run in _number_runs(text):
        lo = max(0, run.start() - 3)  # room for '+', '(' and an IBAN's country code
        hi = run.end()
        yield from _ibans(text, lo, hi)
        for match in _CARD.finditer(text, lo, hi):
            span = _card_within(text, match.start(), match.end())
            if span is not None:
                yield "payment_card", span[0], span[1], "card number (issuer prefix, Luhn)"
        for match in _NINO.finditer(text, lo, hi):
            if _bounded(text, match.start(), match.end(), _WORDISH):
                yield "uk_nino", match.start(), match.end(), "UK National Insurance number"
        for match in _SSN.finditer(text, lo, hi):
            if _bounded(text, match.start(), match.end(), _NUM_EDGE) and _valid(
                "us.ssn", match.group(0)
            ):
                yield "us_ssn", match.start(), match.end(), "US social security number"
        yield from _national_ids(text, lower, run)
        yield from _phones(text, lower, run)


def _ibans(text: str, lo: int, hi: int) -> Iterator[Hit]:
    # Letters end a number run: the country code and the bank code may lie before it,
    # and the account part after it.
    for match in _IBAN.finditer(text, max(0, lo - 32), min(len(text), hi + 40)):
        if match.start() > hi:
            break
        if not _bounded(text, match.start(), match.end(), _WORDISH):
            continue
        # A grouped IBAN may have taken in a short word after it: try without it.
        groups = re.split(r"(?<=[A-Za-z0-9])(?=[ \-])", match.group(0))
        for k in range(len(groups), 0, -1):
            candidate = "".join(groups[:k])
            if len(candidate) >= 15 and iban_ok(candidate):
                start = match.start()
                yield "iban", start, start + len(candidate), "IBAN (mod-97 checksum)"
                break


# --- national identity numbers --------------------------------------------------------------

# Printed shapes distinctive enough (with their checksums) to count without context.
_STRONG_IDS: tuple[tuple[str, str], ...] = (
    ("br.cpf", r"\d{3}\.\d{3}\.\d{3}-\d{2}"),
    ("kr.rrn", r"\d{6}-[1-8]\d{6}"),
    ("my.nric", r"\d{6}-\d{2}-\d{4}"),
    ("pk.cnic", r"\d{5}-\d{7}-\d"),
    ("do.cedula", r"\d{3}-\d{7}-\d"),
    ("ch.ssn", r"756\.\d{4}\.\d{4}\.\d{2}"),
    ("be.nn", r"\d{2}\.\d{2}\.\d{2}-\d{3}\.\d{2}"),
    ("cl.rut", r"\d{1,2}\.\d{3}\.\d{3}-[\dkK]"),
    ("fi.hetu", r"\d{6}[-+A-FU-Y]\d{3}[0-9A-FHJ-NPR-Y]"),
    ("se.personnummer", r"(?:19|20)?\d{6}[-+]\d{4}"),
    ("cz.rc", r"\d{6}/\d{3,4}"),
    ("es.dni", r"\d{8}-?[A-HJ-NP-TV-Z]"),
    ("es.nie", r"[XYZ]-?\d{7}-?[A-HJ-NP-TV-Z]"),
    ("it.codicefiscale", r"[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]"),
    ("mx.curp", r"[A-Z]{4}\d{6}[HM][A-Z]{5}[A-Z0-9]\d"),
    ("cn.ric", r"\d{17}[\dX]"),
    ("fr.nir", r"[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}"),
    ("in_.aadhaar", r"[2-9]\d{3} \d{4} \d{4}"),
    ("pt.cc", r"\d{8} ?\d ?[A-Z]{2}\d"),
    ("us.itin", r"9\d{2}-(?:5\d|6[0-5]|7\d|8[0-8]|9[0-24-9])-\d{4}"),
    ("ie.pps", r"\d{7}[A-W][A-IW]?"),
)
_STRONG_RE = re.compile(
    "|".join(f"(?P<g{i}>{pattern})" for i, (_, pattern) in enumerate(_STRONG_IDS)), re.I
)
# Digits-only formats: counted after an identity word in the 48 characters before.
_CONTEXT_IDS = (
    "us.ssn", "nl.bsn", "pl.pesel", "no.fodselsnummer", "dk.cpr", "de.idnr", "tr.tckimlik",
    "za.idnr", "ro.cnp", "bg.egn", "hr.oib", "si.emso", "ee.ik", "lt.asmens", "gr.amka",
    "il.idnr", "ca.sin", "au.tfn", "nz.ird", "at.vnr", "gb.nhs", "is_.kennitala", "ar.dni",
    "id.nik", "jp.in_", "th.pin", "ec.ci", "pe.cui", "in_.pan", "mx.rfc", "cu.ni", "sk.rc",
    "mu.nid", "ua.rntrc", "be.bis", "li.peid", "in_.vid", "in_.epic", "fr.nir", "br.cpf",
    "cn.ric", "kr.rrn", "se.personnummer", "fi.hetu", "es.dni", "es.nie", "it.codicefiscale",
    "in_.aadhaar", "pt.cc", "ie.pps", "ch.ssn", "be.nn", "cl.rut", "my.nric", "pk.cnic",
)  # fmt: skip
_ID_WORDS = re.compile(
    r"(?i)(?:\bssn\b|social security|soc\.? ?sec|national (?:id|identity|insurance)|\bid (?:no|nr|"
    r"number|card|code)|identity|personal (?:id|code|number|identification)|passport|tax ?(?:id|"
    r"number|code|file)|\btin\b|\bbsn\b|burgerservice|personnummer|f[øo]dselsnummer|"
    r"henkil[öo]tunnus|\bhetu\b|\bcpr\b|pesel|\bnif\b|\bnie\b|\bdni\b|\bcpf\b|\bcnp\b|\begn\b|"
    r"\boib\b|emšo|\bemso\b|amka|\bpps\b|aadhaa?r|\bpan\b|\bcurp\b|\brfc\b|\brut\b|\bcuit\b|"
    r"c[ée]dula|kennitala|kimlik|\brrn\b|resident registration|\bnric\b|mykad|\bsin\b|"
    r"social insurance|\btfn\b|\bird\b|steuer-?id|identifikationsnummer|\bidnr\b|codice fiscale|"
    r"\bnir\b|s[ée]curit[ée] sociale|insee|rijksregister|registre national|isikukood|asmens|"
    r"rodn[ée] [čc][íi]slo|sozialversicherung|\bsvnr\b|\bahv\b|\bavs\b|ausweis|\bnhs\b|"
    r"\bnik\b|my number|マイナンバー|身份证|주민등록|\bcnic\b|\bdui\b|\bcui\b|\bnid\b|"
    r"identification|id#|\bid:)"
)
# An identity word that names one country's number: only that validator applies.
_SPECIFIC: dict[str, tuple[str, ...]] = {
    "ssn": ("us.ssn",), "social security": ("us.ssn", "ch.ssn", "be.ssn", "fr.nir", "at.vnr"),
    "bsn": ("nl.bsn",), "burgerservice": ("nl.bsn",), "pesel": ("pl.pesel",),
    "personnummer": ("se.personnummer", "no.fodselsnummer"), "cpr": ("dk.cpr",),
    "fødselsnummer": ("no.fodselsnummer",), "fodselsnummer": ("no.fodselsnummer",),
    "cpf": ("br.cpf",), "dni": ("es.dni", "ar.dni"), "nie": ("es.nie",), "cnp": ("ro.cnp",),
    "egn": ("bg.egn",), "oib": ("hr.oib",), "amka": ("gr.amka",), "pps": ("ie.pps",),
    "aadhaar": ("in_.aadhaar",), "aadhar": ("in_.aadhaar",), "pan": ("in_.pan",),
    "curp": ("mx.curp",), "rfc": ("mx.rfc",), "rut": ("cl.rut",), "kennitala": ("is_.kennitala",),
    "sin": ("ca.sin",), "social insurance": ("ca.sin",), "tfn": ("au.tfn",), "ird": ("nz.ird",),
    "nhs": ("gb.nhs",), "nik": ("id.nik",), "cnic": ("pk.cnic",), "nric": ("my.nric",),
    "codice fiscale": ("it.codicefiscale",), "nir": ("fr.nir",), "isikukood": ("ee.ik",),
    "pesel:": ("pl.pesel",), "hetu": ("fi.hetu",), "henkilötunnus": ("fi.hetu",),
}  # fmt: skip
_ID_TOKEN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-/]*[A-Za-z0-9])?")


def _valid(module: str, value: str) -> bool:
    try:
        return bool(_stdnum(module).is_valid(value))
    except Exception:  # a validator's own edge case is a "no", never a crash
        return False


def _national_ids(text: str, lower: str, run: re.Match[str]) -> Iterator[Hit]:
    lo = max(0, run.start() - 12)
    hi = min(len(text), run.end() + 2)
    for match in _STRONG_RE.finditer(text, lo, hi):
        if not _bounded(text, match.start(), match.end(), _WORDISH | {"-", "."}):
            continue
        module = _STRONG_IDS[int(next(k for k, v in match.groupdict().items() if v)[1:])][0]
        if _valid(module, match.group(0)):
            yield "national_id", match.start(), match.end(), f"identity number ({module})"
            return
    # The nearest identity word before the number decides which validators apply.
    words = list(_ID_WORDS.finditer(text, max(0, run.start() - 48), run.start()))
    if not words:
        return
    word = words[-1]
    modules = _SPECIFIC.get(word.group(0).lower().strip(), _CONTEXT_IDS)
    spans = [m.span() for m in _ID_TOKEN.finditer(text, run.start(), run.end())]
    spans.append((run.start(), run.end()))  # a number printed in groups ("046 454 286")
    for start, end in spans:
        candidate = text[start:end].strip(" .-/()")
        if len(candidate) < 6 or not _bounded(text, start, end, _WORDISH):
            continue
        compact = candidate.replace(" ", "")
        module = next((m for m in modules if _valid(m, candidate) or _valid(m, compact)), None)
        if module is not None:
            yield "national_id", start, end, f"identity number ({module})"
            return


# --- phones -----------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?:\+|\b00)[1-9]\d{0,2}[ .\-/]?(?:\(0\)[ .\-]?)?(?:\(?\d{1,5}\)?[ .\-/]?){1,6}\d"
    r"|\(?\b\d{2,5}\)?[ .\-/]\d{2,5}(?:[ .\-/]\d{2,5}){0,3}"
    r"|\b\d{10,12}\b"
)
_PHONE_WORDS = re.compile(
    r"(?i)(?:phone|\btel\b|tel\.|telefon|t[ée]l[ée]phone|tel[ée]fono|mobile|\bmob\b|\bcell\b|"
    r"\bfax\b|whatsapp|signal|\bcall\b|ring|text me|sms|contact|reach (?:me|us|him|her)|"
    r"\bdial\b|handy|portable|celular|numero|número|nummer|电话|手机|電話|전화)"
)
_DATE = re.compile(
    r"(?:\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})(?:[ T]\d{1,2}(?::\d\d)+)?$"
)
_IP = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?$")
_VERSION = re.compile(r"\d+(?:\.\d+){1,}$")


def _phone_bounded(text: str, start: int, end: int) -> bool:
    """Not part of a longer number, version or path; a sentence's full stop may follow."""
    if start > 0 and text[start - 1] in _WORDISH | {".", "-", "/", "+"}:
        return False
    if end < len(text):
        nxt = text[end]
        if nxt in _WORDISH or nxt in "/:":
            return False
        if nxt in ".-" and end + 1 < len(text) and text[end + 1].isdigit():
            return False
    return True


def _phones(text: str, lower: str, run: re.Match[str]) -> Iterator[Hit]:
    lo = max(0, run.start() - 3)
    for match in _PHONE.finditer(text, lo, run.end()):
        raw = match.group(0)
        start, end = match.span()
        if not _phone_bounded(text, start, end):
            continue
        digits = re.sub(r"\D", "", raw)
        if not 7 <= len(digits) <= 15 or len(set(digits)) <= 2:
            continue
        bare = raw.lstrip("+(")
        if _DATE.match(bare) or _IP.match(bare) or (_VERSION.match(raw) and "+" not in raw):
            continue
        international = raw.startswith(("+", "00"))
        context = _PHONE_WORDS.search(text, max(0, start - 40), start) is not None
        if not international and not context and not _us_shape(raw):
            continue
        if _phone_valid(raw, international, lenient=context):
            yield "phone", start, end, "phone number (libphonenumber)"


_US_SHAPE = re.compile(r"\(\d{3}\) ?\d{3}-\d{4}|\d{3}-\d{3}-\d{4}")
_REGIONS = ("US", "GB", "DE", "FR", "IN", "ES", "IT", "NL", "BR", "AU", "CA", "JP", "CN")


def _us_shape(raw: str) -> bool:
    return _US_SHAPE.fullmatch(raw) is not None


def _phone_valid(raw: str, international: bool, lenient: bool = False) -> bool:
    """Valid for libphonenumber; after a word like "phone" a possible number is enough
    (numbers reserved for fiction, or newer than the library's data, are still phones)."""
    import phonenumbers  # imported at the first candidate: most text has none

    number = "+" + raw[2:] if raw.startswith("00") else raw
    for region in (None,) if international else _REGIONS:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return True
        if lenient and phonenumbers.is_possible_number(parsed):
            return True
    return False
