"""Identity traits -> normalised, SHA-256-hashed ``user_data`` fields.

Normalisation follows Meta's Conversions API "customer information parameters"
rules (TikTok's Events API asks for the same). A value that is already a SHA-256
hex digest is passed through lowercased; a value that cannot be normalised, or that
is known to be wrong (a phone number that is not a number of its country), is
dropped and reported, never sent raw and never sent as a guess; empty values are
dropped quietly.

Phones are parsed with ``phonenumbers`` when it is installed (the ``[phone]`` extra),
with the ``country`` trait, else the ``default_region``, as the region of a number
written without its country code; without it, by the rules in :func:`_phone_by_rules`.

``external_id`` is hashed too, although the browser SDK sends it raw (docs/wire.md, section 3):
the server's ids are account ids, often e-mail addresses or database keys, and this
package promises that no raw identity value leaves the process; Meta recommends
hashing it and TikTok requires it. Pairing is unaffected (it uses ``event_id``).
A site that wants the browser and server to send the same value gives the browser
``sha256(id)`` as its ``external_id``: a digest passes through here unchanged.

Props are a different channel: :func:`is_pii_key` names the prop keys that hold an
identity field (``customer_email``, ``billing.phone``, ``dateOfBirth``...), which
``_event`` drops from ``custom_data`` rather than send raw.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping
from types import ModuleType

from ._countries import COUNTRIES, PHONE_PREFIXES

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TRUNK_ZERO_RE = re.compile(r"\(\s*0\s*\)")
# "ext. 123", "extension 123", "x123", "#123", ";ext=123" at the end of a number.
_EXTENSION_RE = re.compile(r"\s*(?:;\s*ext\s*=|ext(?:ension)?\.?|x|#)\s*\d{1,7}\s*\Z", re.IGNORECASE)
_US_ZIP_RE = re.compile(r"(\d{5})(?:-?\d{4})?")
_COUNTRY_WORD_RE = re.compile(r"[^\W_]+")
_MAX_TEXT = 256  # longer than any trait: refused before any parsing

_US_STATES = {
    "alabama": "al",
    "alaska": "ak",
    "arizona": "az",
    "arkansas": "ar",
    "california": "ca",
    "colorado": "co",
    "connecticut": "ct",
    "delaware": "de",
    "districtofcolumbia": "dc",
    "florida": "fl",
    "georgia": "ga",
    "hawaii": "hi",
    "idaho": "id",
    "illinois": "il",
    "indiana": "in",
    "iowa": "ia",
    "kansas": "ks",
    "kentucky": "ky",
    "louisiana": "la",
    "maine": "me",
    "maryland": "md",
    "massachusetts": "ma",
    "michigan": "mi",
    "minnesota": "mn",
    "mississippi": "ms",
    "missouri": "mo",
    "montana": "mt",
    "nebraska": "ne",
    "nevada": "nv",
    "newhampshire": "nh",
    "newjersey": "nj",
    "newmexico": "nm",
    "newyork": "ny",
    "northcarolina": "nc",
    "northdakota": "nd",
    "ohio": "oh",
    "oklahoma": "ok",
    "oregon": "or",
    "pennsylvania": "pa",
    "rhodeisland": "ri",
    "southcarolina": "sc",
    "southdakota": "sd",
    "tennessee": "tn",
    "texas": "tx",
    "utah": "ut",
    "vermont": "vt",
    "virginia": "va",
    "washington": "wa",
    "westvirginia": "wv",
    "wisconsin": "wi",
    "wyoming": "wy",
    "puertorico": "pr",
    "guam": "gu",
    "americansamoa": "as",
    "virginislands": "vi",
    # Canadian provinces and territories
    "alberta": "ab",
    "britishcolumbia": "bc",
    "manitoba": "mb",
    "newbrunswick": "nb",
    "newfoundlandandlabrador": "nl",
    "novascotia": "ns",
    "ontario": "on",
    "princeedwardisland": "pe",
    "quebec": "qc",
    "québec": "qc",
    "saskatchewan": "sk",
    "northwestterritories": "nt",
    "nunavut": "nu",
    "yukon": "yt",
}

_GENDERS = {"f": "f", "female": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}

_MONTH_NAMES = "january february march april may june july august september october november december".split()
_MONTHS = {name: i for i, name in enumerate(_MONTH_NAMES, 1)} | {name[:3]: i for i, name in enumerate(_MONTH_NAMES, 1)}
_MONTHS["sept"] = 9
_ISO_DATE_RE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ][0-9:.+Z-]*)?")
_DATE_TOKEN_RE = re.compile(r"\d+|[^\W\d_]+")
_DATE_SEPARATORS = frozenset(" /.-,")
_ORDINALS = frozenset({"st", "nd", "rd", "th", "of"})


class Unusable(ValueError):
    """A trait value that cannot be normalised; never carries the value itself."""


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise Unusable("not a string")
    if len(value) > _MAX_TEXT:
        raise Unusable("too long")
    return value.strip()


def _letters(value: str) -> str:
    """NFC, lowercase, no punctuation, symbols or spaces; letters outside ASCII kept."""
    text = unicodedata.normalize("NFC", value).lower()
    return "".join(c for c in text if unicodedata.category(c)[0] in "LMN")


def normalize_email(value: object) -> str:
    # NFC first, as for names: "e" + combining accent and "é" are one address.
    v = unicodedata.normalize("NFC", _text(value)).strip().lower()
    if v and not _EMAIL_RE.fullmatch(v):
        raise Unusable("not an email address")
    return v


# -- phones ---------------------------------------------------------------------------
@functools.cache
def _phonenumbers() -> ModuleType | None:
    """The optional ``phonenumbers`` library, imported on first use (it is not small)."""
    try:
        import phonenumbers
    except ImportError:
        return None
    return phonenumbers


def normalize_phone(value: object, region: str | None = None) -> str:
    """E.164 digits without ``+``. ``region``: lowercase alpha-2 of a national number."""
    v = _text(value)
    if not v:
        return ""
    # Full-width digits and the like to ASCII; an extension is not part of the number.
    v = _EXTENSION_RE.sub("", unicodedata.normalize("NFKC", v))
    if v.startswith("00"):
        v = "+" + v[2:]  # the international prefix of most countries, whatever the region
    if _phonenumbers() is not None:
        return _phone_by_library(v, region)
    return _phone_by_rules(v, region)


def _digits(text: str) -> str:
    return "".join(c for c in _TRUNK_ZERO_RE.sub("", text) if c.isascii() and c.isdigit())


def _phone_by_library(text: str, region: str | None) -> str:
    import phonenumbers

    candidates: list[tuple[str, str | None]] = []
    if text.startswith("+"):
        candidates.append((text, None))
    else:
        if region:
            candidates.append((text, region.upper()))
        # As without phonenumbers: digits may already start with their country code.
        candidates.append(("+" + _digits(text).lstrip("0"), None))
    for raw, reg in candidates:
        try:
            number = phonenumbers.parse(raw, reg)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
    raise Unusable("not a valid phone number for its country")


def _phone_by_rules(text: str, region: str | None) -> str:
    """Without phonenumbers: ``+``/``00`` numbers as written; a national number with
    the region's calling code in front of it (its trunk prefix, such as the ``0`` of
    ``06 12 34 56 78``, removed); without a region, digits are taken to start with
    their country code, and a number that visibly does not (a leading ``0`` or
    ``(``) is refused rather than sent wrong."""
    digits = _digits(text)
    if text.startswith("+"):
        digits = digits.lstrip("0")
    elif region and region in PHONE_PREFIXES:
        code, trunk = PHONE_PREFIXES[region]
        if trunk and digits.startswith(trunk):
            digits = code + digits[len(trunk) :]
        elif not digits.startswith(code):
            digits = code + digits
    elif text.startswith(("0", "(")):
        raise Unusable("a national number and no country to place it")
    if not 7 <= len(digits) <= 15 or digits.startswith("0"):  # E.164: at most 15 digits
        raise Unusable("not a phone number with a country code")
    return digits


# -- names, places ---------------------------------------------------------------------
def normalize_name(value: object) -> str:
    v = _text(value)
    n = _letters(v)
    if v and not n:
        raise Unusable("has no letters")
    return n


def normalize_gender(value: object) -> str:
    v = _text(value).lower()
    if not v:
        return ""
    if v not in _GENDERS:
        raise Unusable("not f or m")
    return _GENDERS[v]


def normalize_state(value: object) -> str:
    v = _letters(_text(value))
    return _US_STATES.get(v, v)


def normalize_zip(value: object, country: str | None = None) -> str:
    v = _text(value).lower()
    us = _US_ZIP_RE.fullmatch(v)
    if us and country in (None, "us"):
        return us.group(1)
    return "".join(c for c in v if c not in " -\t")


def country_key(text: str) -> str:
    """The lookup key of a country name: casefolded, accents stripped, a leading
    "the" dropped, "&" read as "and", only letters and digits kept
    (``"Côte d'Ivoire"`` -> ``"cotedivoire"``, ``"U.S.A."`` -> ``"usa"``)."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c)).replace("&", " and ")
    words = _COUNTRY_WORD_RE.findall(folded)
    if len(words) > 1 and words[0] == "the":
        del words[0]
    return "".join(words)


def normalize_country(value: object) -> str:
    """Lowercase ISO 3166-1 alpha-2 from a code (alpha-2 or alpha-3) or an English
    ISO, official or common name, or one of the aliases in ``_countries``."""
    v = _text(value)
    if not v:
        return ""
    code = COUNTRIES.get(country_key(v))
    if code is None:
        raise Unusable("not a country name or ISO 3166-1 code")
    return code


# -- dates of birth --------------------------------------------------------------------
def normalize_date_of_birth(value: object) -> str:
    """``YYYYMMDD`` from a date, ISO ``YYYY-MM-DD`` (a time after it is ignored),
    ``YYYYMMDD``, ``D/M/YYYY`` or ``M/D/YYYY`` when the order is unambiguous (a part
    above 12, or both equal), or with an English month name (``16 Feb 1997``,
    ``February 16, 1997``). Separators: ``/ . - ,`` and spaces. Years 1900 to today."""
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        parsed = value
    else:
        v = _text(value)
        if not v:
            return ""
        parsed = _parse_date(v)
    if parsed.year < 1900 or parsed > _dt.date.today():
        raise Unusable("year out of range")
    return parsed.strftime("%Y%m%d")


def _parse_date(text: str) -> _dt.date:
    iso = _ISO_DATE_RE.fullmatch(text)
    if iso:
        return _date(int(iso[1]), int(iso[2]), int(iso[3]))
    lowered = text.lower()
    if any(not c.isalnum() and c not in _DATE_SEPARATORS for c in lowered):
        raise Unusable("not a date (use YYYY-MM-DD or a date object)")
    tokens = [t for t in _DATE_TOKEN_RE.findall(lowered) if t not in _ORDINALS]
    if len(tokens) == 1 and len(tokens[0]) == 8 and tokens[0].isdigit():
        t = tokens[0]
        return _date(int(t[:4]), int(t[4:6]), int(t[6:]))
    if len(tokens) != 3:
        raise Unusable("not a date (use YYYY-MM-DD or a date object)")
    months = [t for t in tokens if not t.isdigit()]
    if months:
        numbers = [t for t in tokens if t.isdigit()]
        if len(months) != 1 or months[0] not in _MONTHS:
            raise Unusable("not a month name")
        years = [t for t in numbers if len(t) == 4]
        days = [t for t in numbers if len(t) <= 2]
        if len(years) != 1 or len(days) != 1:
            raise Unusable("not a date (use YYYY-MM-DD or a date object)")
        return _date(int(years[0]), _MONTHS[months[0]], int(days[0]))
    a, b, c = tokens
    if len(a) == 4 and len(b) <= 2 and len(c) <= 2:
        return _date(int(a), int(b), int(c))  # year first is always year-month-day
    if len(c) != 4 or len(a) > 2 or len(b) > 2:
        raise Unusable("not a date (a four-digit year is required)")
    first, second = int(a), int(b)
    if first > 12 >= second:
        return _date(int(c), second, first)  # 16.02.1997: day first
    if second > 12 >= first or first == second:
        return _date(int(c), first, second)  # 2/16/1997: month first
    raise Unusable("ambiguous day and month order (use YYYY-MM-DD)")


def _date(year: int, month: int, day: int) -> _dt.date:
    try:
        return _dt.date(year, month, day)
    except ValueError:
        raise Unusable("not a calendar date") from None


def normalize_external_id(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value)


# trait -> (user_data key, normaliser)
TRAITS: dict[str, tuple[str, Callable[[object], str]]] = {
    "email": ("em", normalize_email),
    "phone": ("ph", normalize_phone),
    "first_name": ("fn", normalize_name),
    "last_name": ("ln", normalize_name),
    "gender": ("ge", normalize_gender),
    "date_of_birth": ("db", normalize_date_of_birth),
    "city": ("ct", normalize_name),
    "state": ("st", normalize_state),
    "zip": ("zp", normalize_zip),
    "country": ("country", normalize_country),
    "external_id": ("external_id", normalize_external_id),
}


def normalize(trait: str, value: object, country: str | None = None) -> str:
    """The normalised plain value of one trait ('' when empty). ``country``: the
    lowercase alpha-2 that places a national phone number or a zip code.
    Raises :class:`Unusable`."""
    if trait == "zip":
        return normalize_zip(value, country)
    if trait == "phone":
        return normalize_phone(value, country)
    return TRAITS[trait][1](value)


def _region(value: object) -> str | None:
    try:
        return normalize_country(value) or None
    except Unusable:
        return None


def hash_traits(traits: Mapping[str, object], *, default_region: str | None = None) -> tuple[dict[str, str], list[str]]:
    """``({user_data key: sha256}, [names of traits that were dropped as unusable])``.

    The ``country`` trait, else ``default_region`` (``Settings.default_phone_region``),
    places phone numbers and zip codes written without their country."""
    out: dict[str, str] = {}
    rejected: list[str] = []
    country = _region(traits["country"]) if "country" in traits else None
    if country is None and default_region:
        country = _region(default_region)
    for trait, value in traits.items():
        if value is None:
            continue
        spec = TRAITS.get(trait)
        if spec is None:
            rejected.append(trait)  # an unknown trait is never sent, raw or hashed
            continue
        if isinstance(value, str) and _SHA256_RE.fullmatch(value.strip()):
            out[spec[0]] = value.strip().lower()
            continue
        try:
            plain = normalize(trait, value, country)
        except Unusable:
            rejected.append(trait)
            continue
        if plain:
            out[spec[0]] = sha256_hex(plain)
    return out, rejected


# -- identity fields among props --------------------------------------------------------
# A prop key names an identity field when its last words (any case, any separator,
# camelCase split, trailing digits ignored) are one of these. Last words, so that
# ``email_opt_in`` and ``phone_verified`` (flags about a field) still go through.
_NAME_OWNERS = (
    "first last given family full middle maiden customer billing shipping recipient contact buyer cardholder holder"
)
_PII_KEY_TERMS: frozenset[tuple[str, ...]] = frozenset(
    tuple(term.split())
    for term in (
        # email
        "email",
        "emails",
        "e mail",
        "emailaddress",
        # phone
        "phone",
        "phones",
        "phonenumber",
        "phone number",
        "phone numbers",
        "telephone",
        "tel",
        "cellphone",
        "mobile number",
        "msisdn",
        # names ("name" alone is a product's, an event's...)
        *(f"{owner} name" for owner in _NAME_OWNERS.split()),
        "firstname",
        "fname",
        "givenname",
        "lastname",
        "lname",
        "surname",
        "familyname",
        "fullname",
        "middlename",
        # date of birth and gender
        "date of birth",
        "dateofbirth",
        "dob",
        "birthday",
        "birth date",
        "birthdate",
        "birth day",
        "bday",
        "gender",
        "sex",
        # where they live ("state" and "country" are left alone: order states, shop countries)
        "city",
        "zip",
        "zipcode",
        "zip code",
        "postcode",
        "post code",
        "postal",
        "postal code",
        "postalcode",
        "address",
        "addresses",
        "address line",
        "addressline",
        "street",
        # the account id, hashed as a trait
        "external id",
        "externalid",
    )
)
_KEY_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_KEY_TAIL = 64  # only the last words decide; bounds the work and the cache entries


def is_pii_key(key: str) -> bool:
    """Does this prop key name an identity field? ``Email``, ``customer_email``,
    ``billing.phone``, ``phoneNumber``, ``first-name``, ``DOB``, ``shipping_zip``,
    ``address_line1``: yes. ``name``, ``email_opt_in``, ``state``: no."""
    return _is_pii_key(key[-_KEY_TAIL:])


@functools.lru_cache(maxsize=1024)
def _is_pii_key(key: str) -> bool:
    ascii_key = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode()
    words = [w.lower() for w in _KEY_WORD_RE.findall(ascii_key)]
    while words and words[-1].isdigit():
        words.pop()
    return any(tuple(words[-n:]) in _PII_KEY_TERMS for n in (1, 2, 3) if len(words) >= n)
