"""Identity traits -> normalised, SHA-256-hashed ``user_data`` fields.

Normalisation follows Meta's Conversions API "customer information parameters"
rules (TikTok's Events API asks for the same). A value that is already a SHA-256
hex digest is passed through lowercased; a value that cannot be normalised is
dropped and reported, never sent raw; empty values are dropped quietly.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TRUNK_ZERO_RE = re.compile(r"\(\s*0\s*\)")
_US_ZIP_RE = re.compile(r"(\d{5})(?:-?\d{4})?")

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

# ISO 3166-1 alpha-2, all officially assigned codes.
_ISO_COUNTRIES = frozenset(
    (
        "ad ae af ag ai al am ao aq ar as at au aw ax az ba bb bd be bf bg bh bi bj bl bm bn bo "
        "bq br bs bt bv bw by bz ca cc cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj "
        "dk dm do dz ec ee eg eh er es et fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn gp "
        "gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in io iq ir is it je jm jo jp ke kg "
        "kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mf mg mh mk ml "
        "mm mn mo mp mq mr ms mt mu mv mw mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe "
        "pf pg ph pk pl pm pn pr ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si sj sk sl "
        "sm sn so sr ss st sv sx sy sz tc td tf tg th tj tk tl tm tn to tr tt tv tw tz ua ug um "
        "us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw "
    ).split()
)
_COUNTRY_ALIASES = {
    "usa": "us",
    "unitedstates": "us",
    "unitedstatesofamerica": "us",
    "america": "us",
    "uk": "gb",
    "unitedkingdom": "gb",
    "greatbritain": "gb",
    "england": "gb",
    "scotland": "gb",
    "wales": "gb",
    "northernireland": "gb",
    "canada": "ca",
    "can": "ca",
    "germany": "de",
    "deutschland": "de",
    "deu": "de",
    "france": "fr",
    "fra": "fr",
    "spain": "es",
    "espana": "es",
    "españa": "es",
    "esp": "es",
    "italy": "it",
    "italia": "it",
    "ita": "it",
    "mexico": "mx",
    "méxico": "mx",
    "mex": "mx",
    "australia": "au",
    "aus": "au",
    "netherlands": "nl",
    "nld": "nl",
    "brazil": "br",
    "brasil": "br",
    "bra": "br",
    "india": "in",
    "ind": "in",
    "japan": "jp",
    "jpn": "jp",
    "china": "cn",
    "chn": "cn",
    "ireland": "ie",
    "irl": "ie",
    "gbr": "gb",
}
_GENDERS = {"f": "f", "female": "f", "woman": "f", "m": "m", "male": "m", "man": "m"}
_DOB_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d")


class Unusable(ValueError):
    """A trait value that cannot be normalised; never carries the value itself."""


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise Unusable("not a string")
    return value.strip()


def _letters(value: str) -> str:
    """NFC, lowercase, no punctuation, symbols or spaces; letters outside ASCII kept."""
    text = unicodedata.normalize("NFC", value).lower()
    return "".join(c for c in text if unicodedata.category(c)[0] in "LMN")


def normalize_email(value: object) -> str:
    v = _text(value).lower()
    if v and not _EMAIL_RE.fullmatch(v):
        raise Unusable("not an email address")
    return v


def normalize_phone(value: object) -> str:
    v = _text(value)
    if not v:
        return ""
    # "+44 (0)20 ..." -> the "(0)" is a trunk prefix dialled only inside the country.
    digits = "".join(c for c in _TRUNK_ZERO_RE.sub("", v) if c.isascii() and c.isdigit())
    digits = digits.lstrip("0")  # "00" international prefix, and Meta's "no leading zeros"
    if not 7 <= len(digits) <= 15:  # E.164 allows at most 15 digits
        raise Unusable("not a phone number with a country code")
    return digits


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


def normalize_date_of_birth(value: object) -> str:
    if isinstance(value, _dt.datetime):
        value = value.date()
    if isinstance(value, _dt.date):
        parsed = value
    else:
        v = _text(value)
        if not v:
            return ""
        for fmt in _DOB_FORMATS:
            try:
                parsed = _dt.datetime.strptime(v, fmt).date()
                break
            except ValueError:
                continue
        else:
            raise Unusable("not a date (use YYYY-MM-DD or a date object)")
    if not 1900 <= parsed.year <= _dt.date.today().year:
        raise Unusable("year out of range")
    return parsed.strftime("%Y%m%d")


def normalize_state(value: object) -> str:
    v = _letters(_text(value))
    return _US_STATES.get(v, v)


def normalize_zip(value: object, country: str | None = None) -> str:
    v = _text(value).lower()
    us = _US_ZIP_RE.fullmatch(v)
    if us and country in (None, "us"):
        return us.group(1)
    return "".join(c for c in v if c not in " -\t")


def normalize_country(value: object) -> str:
    v = _letters(_text(value))
    if not v:
        return ""
    code = _COUNTRY_ALIASES.get(v, v)
    if code not in _ISO_COUNTRIES:
        raise Unusable("not an ISO 3166-1 alpha-2 country code")
    return code


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
    """The normalised plain value of one trait ('' when empty). Raises :class:`Unusable`."""
    if trait == "zip":
        return normalize_zip(value, country)
    return TRAITS[trait][1](value)


def hash_traits(traits: Mapping[str, object]) -> tuple[dict[str, str], list[str]]:
    """``({user_data key: sha256}, [names of traits that were dropped as unusable])``."""
    out: dict[str, str] = {}
    rejected: list[str] = []
    country = None
    if "country" in traits:
        try:
            country = normalize_country(traits["country"]) or None
        except Unusable:
            pass
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
