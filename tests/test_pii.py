from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from layersync_middleware import _countries, _pii
from layersync_middleware._pii import (
    Unusable,
    country_key,
    hash_traits,
    is_pii_key,
    normalize,
    normalize_country,
    normalize_date_of_birth,
    normalize_phone,
    sha256_hex,
)

# trait, input, normalised (what is hashed), SHA-256 of the normalised value
TABLE = [
    (
        "email",
        "  Ada@Example.COM ",
        "ada@example.com",
        "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72",
    ),
    ("phone", "+1 (650) 555-1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    (
        "phone",
        "+44 (0)20 7946 0958",
        "442079460958",
        "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823",
    ),
    ("phone", "0044 20 7946 0958", "442079460958", "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"),
    ("phone", "1-650-555-1212", "16505551212", "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"),
    (
        "phone",
        "+1 650-555-1212 ext. 123",
        "16505551212",
        "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176",
    ),
    # decomposed "e" + combining acute in an address, NFC like names (14.19)
    (
        "email",
        " Jose\u0301@Example.com",
        "josé@example.com",
        "b0a53cf19e34d05b57bced7365c6b00ddbe38d62957e863de2a66a56c3b42cea",
    ),
    ("date_of_birth", "2/16/1997", "19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"),
    ("date_of_birth", "16.02.1997", "19970216", "01acdbf6ec7b4f478a225f1a246e5d6767eeab1a7ffa17f025265b5b94f40f0c"),
    ("first_name", " Mary ", "mary", "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"),
    ("first_name", "José", "josé", "d994e1d001886fe5b45b1267bd1fa2b752ac50742579bd3dad7b2a2aa0ed6866"),
    # decomposed "e" + combining acute, normalised to NFC before hashing
    ("first_name", "Jose\u0301", "josé", "d994e1d001886fe5b45b1267bd1fa2b752ac50742579bd3dad7b2a2aa0ed6866"),
    ("last_name", "Saint-Pierre", "saintpierre", "ec795a9f186447d20d1be7f97498dac3add210ef5dd82a2031fdc32b2025b4e9"),
    ("city", "New York", "newyork", "350c754ba4d38897693aa077ef43072a859d23f613443133fecbbd90a3512ca5"),
    ("gender", "Male", "m", "62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a"),
    ("gender", "F", "f", "252f10c83610ebca1a059c0bae8255eba2f95be4d1d7bcfa89d7248a82d9f111"),
    ("date_of_birth", "1990-01-02", "19900102", "19bb8a164e99b8549f5f5c9e810115de44d02402f68aefe2df61b4fddacfa085"),
    (
        "date_of_birth",
        dt.date(1990, 1, 2),
        "19900102",
        "19bb8a164e99b8549f5f5c9e810115de44d02402f68aefe2df61b4fddacfa085",
    ),
    ("state", "California", "ca", "6959097001d10501ac7d54c0bdb8db61420f658f2922cc26e46d536119a31126"),
    ("state", "NY", "ny", "1b06e2003f8420d6fa42badd8f77ec0f706b976b7a48b13c567dc5a559681683"),
    ("zip", "94035-1234", "94035", "1794327a4d443904421f5ca1f3d72d0a62ba2f0770d80755ec2220fc0efb052e"),
    ("zip", "SW1A 1AA", "sw1a1aa", "830e1d4b9838bab1f5c2acdb23e0b502ff13a9832c4632e8d67a1d43d3b7f614"),
    ("country", "US", "us", "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"),
    ("country", "United Kingdom", "gb", "0b407281768f0e833afef47ed464b6571d01ca4d53c12ce5c51d1462f4ad6677"),
    ("external_id", " user_abc123 ", "user_abc123", "5a2e084061eae2209d14bb47650ce453f9b053745e55d0475bb9c3d695193b38"),
]
KEYS = {
    "email": "em",
    "phone": "ph",
    "first_name": "fn",
    "last_name": "ln",
    "city": "ct",
    "gender": "ge",
    "date_of_birth": "db",
    "state": "st",
    "zip": "zp",
    "country": "country",
    "external_id": "external_id",
}


@pytest.mark.parametrize(("trait", "raw", "normalised", "digest"), TABLE)
def test_normalise_then_hash(trait: str, raw: object, normalised: str, digest: str) -> None:
    assert normalize(trait, raw) == normalised
    hashed, rejected = hash_traits({trait: raw})
    assert rejected == []
    assert hashed == {KEYS[trait]: digest}


def test_already_hashed_values_pass_through_lowercased() -> None:
    digest = "B5FC85E55755F9E0D030A10AB4429B6B2944855F9A0D60077FE832BECBC41D72"
    assert hash_traits({"email": digest}) == ({"em": digest.lower()}, [])


def test_empty_values_are_dropped_quietly() -> None:
    assert hash_traits({"email": "   ", "phone": "", "first_name": None}) == ({}, [])


@pytest.mark.parametrize(
    ("trait", "raw"),
    [
        ("phone", "call me"),  # no digits
        ("phone", "12345"),  # too short for a number with a country code
        ("phone", 15551234567),  # not a string
        ("phone", "(650)555-1212"),  # a national number and no country to place it (14.16)
        ("phone", "06 12 34 56 78"),
        ("email", "not-an-email"),
        ("email", ["ada@example.com"]),
        ("gender", "other"),
        ("date_of_birth", "02/01/1990"),  # ambiguous day/month order
        ("date_of_birth", "1850-01-01"),
        ("country", "Narnia"),
        ("first_name", "!!!"),
        ("favourite_colour", "blue"),  # not a trait: never sent, raw or hashed
    ],
)
def test_unusable_values_are_dropped_and_reported(trait: str, raw: object) -> None:
    hashed, rejected = hash_traits({trait: raw})
    assert hashed == {}
    assert rejected == [trait]


def test_zip_outside_the_us_keeps_all_characters() -> None:
    assert normalize("zip", "94035-1234", country="de") == "940351234"
    hashed, _ = hash_traits({"zip": "94035-1234", "country": "DE"})
    assert hashed["zp"] == sha256_hex("940351234")


def test_no_raw_value_survives() -> None:
    traits = {"email": "ada@example.com", "phone": "+15551234567", "first_name": "Ada", "city": "London"}
    hashed, _ = hash_traits(traits)
    flat = repr(hashed).lower()
    assert all(v.lower() not in flat for v in traits.values())
    assert all(len(v) == 64 for v in hashed.values())


def test_unusable_never_carries_the_value() -> None:
    with pytest.raises(Unusable) as info:
        normalize("email", "secret-person")
    assert "secret-person" not in str(info.value)


# -- 14.16 phones: the country places a national number; extensions are cut; wrong is dropped ----
@pytest.fixture(params=["phonenumbers", "rules"])
def phone_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every phone test runs with the ``[phone]`` extra and with the fallback rules."""
    if request.param == "rules":
        monkeypatch.setattr(_pii, "_phonenumbers", lambda: None)
    else:
        assert _pii._phonenumbers() is not None, "the dev environment installs phonenumbers ([phone] extra)"
    return str(request.param)


# input, region (the country trait, lowercase alpha-2), E.164 digits; the same with both parsers
PHONES = [
    ("(650)555-1212", "us", "16505551212"),
    ("650.555.1212", "us", "16505551212"),
    ("16505551212", "us", "16505551212"),  # already with its country code
    ("06 12 34 56 78", "fr", "33612345678"),  # trunk 0 replaced by the calling code
    ("6 12 34 56 78", "fr", "33612345678"),
    ("\uff10\uff16 12 34 56 78", "fr", "33612345678"),  # full-width digits
    ("06 1234 5678", "it", "390612345678"),  # Italy keeps its 0
    ("8 912 345 67 89", "ru", "79123456789"),  # Russia's trunk prefix is 8
    ("+1 650-555-1212 ext. 123", None, "16505551212"),  # the example: no extension glued on
    ("+1 650 555 1212 x123", None, "16505551212"),
    ("+1 650 555 1212 #5", None, "16505551212"),
    ("+16505551212;ext=9", None, "16505551212"),
    ("(650) 555-1212 extension 42", "us", "16505551212"),
    ("+44 (0)20 7946 0958", None, "442079460958"),
    ("0044 20 7946 0958", None, "442079460958"),
    ("0044 20 7946 0958", "us", "442079460958"),  # 00 is international whatever the region
    ("+33 6 12 34 56 78", "us", "33612345678"),  # a + number ignores the region
    ("442079460958", None, "442079460958"),  # no region: digits start with their country code
]


@pytest.mark.parametrize(("raw", "region", "digits"), PHONES)
def test_phone_numbers(phone_parser: str, raw: str, region: str | None, digits: str) -> None:
    assert normalize_phone(raw, region) == digits


# refused by both parsers: never sent as a guess
BAD_PHONES = [
    ("(650)555-1212", None),  # national: no country to place it (was sent as 6505551212)
    ("06 12 34 56 78", None),  # national (was sent as 612345678)
    ("12345", "us"),
    ("call me", "fr"),
    ("+1 2", None),
    ("1" * 300, "us"),
]


@pytest.mark.parametrize(("raw", "region"), BAD_PHONES)
def test_phone_numbers_known_to_be_wrong_are_refused(phone_parser: str, raw: str, region: str | None) -> None:
    with pytest.raises(Unusable):
        normalize_phone(raw, region)


# input, region, with phonenumbers (None: refused), by the rules alone
PARSER_DIFFERENCES = [
    ("+1 (555) 123-4567", None, None, "15551234567"),  # 555 is no US area code: only the library knows
    ("+33 1", None, None, None),
    ("+49 30 123456", None, "4930123456", "4930123456"),
]


@pytest.mark.parametrize(("raw", "region", "library", "rules"), PARSER_DIFFERENCES)
def test_phonenumbers_validates_what_the_rules_cannot(
    phone_parser: str, raw: str, region: str | None, library: str | None, rules: str | None
) -> None:
    expected = library if phone_parser == "phonenumbers" else rules
    if expected is None:
        with pytest.raises(Unusable):
            normalize_phone(raw, region)
    else:
        assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("traits", "default_region", "digits"),
    [
        ({"phone": "(650)555-1212", "country": "US"}, None, "16505551212"),
        ({"phone": "(650)555-1212", "country": "United States"}, None, "16505551212"),
        ({"phone": "(650)555-1212"}, "US", "16505551212"),  # Settings.default_phone_region
        ({"phone": "(650)555-1212"}, "us", "16505551212"),
        ({"phone": "06 12 34 56 78", "country": "France"}, "US", "33612345678"),  # the trait wins
        ({"phone": "06 12 34 56 78", "country": "Narnia"}, "FR", "33612345678"),  # unusable trait: the default
    ],
)
def test_hash_traits_places_phones_by_country_then_default_region(
    phone_parser: str, traits: dict[str, str], default_region: str | None, digits: str
) -> None:
    hashed, _ = hash_traits(traits, default_region=default_region)
    assert hashed["ph"] == sha256_hex(digits)


def test_a_wrong_phone_is_dropped_and_reported_not_sent(phone_parser: str) -> None:
    assert hash_traits({"phone": "(650)555-1212", "email": "ada@example.com"}) == (
        {"em": sha256_hex("ada@example.com")},
        ["phone"],
    )


def test_default_region_places_zip_codes_too() -> None:
    assert hash_traits({"zip": "94035-1234"}, default_region="DE")[0]["zp"] == sha256_hex("940351234")
    assert hash_traits({"zip": "94035-1234"}, default_region="US")[0]["zp"] == sha256_hex("94035")


# -- 14.17 countries: every ISO name, official and common names, alpha-3, aliases ------------
COUNTRY_NAMES = [
    ("Austria", "at"),
    ("Switzerland", "ch"),
    ("Côte d'Ivoire", "ci"),
    ("COTE D\u2019IVOIRE", "ci"),
    ("Cote d Ivoire", "ci"),
    ("Ivory Coast", "ci"),
    ("United States of America", "us"),
    ("United States", "us"),
    ("USA", "us"),
    ("U.S.A.", "us"),
    ("  united   states ", "us"),
    ("UK", "gb"),
    ("United Kingdom", "gb"),
    ("Great Britain", "gb"),
    ("GBR", "gb"),
    ("Deutschland", "de"),
    ("DEU", "de"),
    ("Österreich", "at"),
    ("The Netherlands", "nl"),
    ("Holland", "nl"),
    ("Korea, Republic of", "kr"),
    ("Republic of Korea", "kr"),
    ("South Korea", "kr"),
    ("North Korea", "kp"),
    ("Bosnia & Herzegovina", "ba"),
    ("Bosnia and Herzegovina", "ba"),
    ("St. Lucia", "lc"),
    ("Saint Lucia", "lc"),
    ("Türkiye", "tr"),
    ("Turkey", "tr"),
    ("Viet Nam", "vn"),
    ("Vietnam", "vn"),
    ("British Virgin Islands", "vg"),
    ("US Virgin Islands", "vi"),
    ("Democratic Republic of the Congo", "cd"),
    ("DR Congo", "cd"),
    ("Congo", "cg"),
    ("Czechia", "cz"),
    ("Czech Republic", "cz"),
    ("Russia", "ru"),
    ("Russian Federation", "ru"),
    ("Iran", "ir"),
    ("Plurinational State of Bolivia", "bo"),
    ("Falkland Islands", "fk"),
    ("Vatican City", "va"),
    ("ÅLAND ISLANDS", "ax"),
    ("Réunion", "re"),
    ("Curaçao", "cw"),
    ("The Gambia", "gm"),
    ("Lao People's Democratic Republic", "la"),
    ("fr", "fr"),
    ("BR", "br"),
]


@pytest.mark.parametrize(("name", "code"), COUNTRY_NAMES)
def test_countries_by_name_code_or_alias(name: str, code: str) -> None:
    assert normalize_country(name) == code


@pytest.mark.parametrize("name", ["Narnia", "Korea", "Virgin Islands", "XX", "U", "Europe"])
def test_unknown_or_ambiguous_countries_are_refused(name: str) -> None:
    with pytest.raises(Unusable):
        normalize_country(name)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Côte d'Ivoire", "cotedivoire"),
        ("U.S.A.", "usa"),
        ("Trinidad & Tobago", "trinidadandtobago"),
        ("The Bahamas", "bahamas"),
        ("  ÅLAND   islands ", "alandislands"),
        ("Straße", "strasse"),  # casefold, not lower
    ],
)
def test_country_key_normalisation(text: str, key: str) -> None:
    assert country_key(text) == key


def test_the_generated_table_covers_every_iso_code_and_says_how_to_regenerate() -> None:
    table = _countries.COUNTRIES
    codes = set(table.values())
    assert len(codes) == 249  # every officially assigned ISO 3166-1 alpha-2 code
    assert all(table[code] == code for code in codes)  # each code is a key for itself
    assert all(len(code) == 2 and code.isascii() and code.islower() for code in codes)
    assert all(key == country_key(key) for key in table)  # keys are already normalised
    assert _countries.PHONE_PREFIXES["fr"] == ("33", "0") and _countries.PHONE_PREFIXES["it"] == ("39", "")
    header = (_countries.__doc__ or "").lower()
    assert "scripts/gen_countries.py" in header and "do not edit" in header
    assert (Path(__file__).resolve().parent.parent / "scripts" / "gen_countries.py").is_file()


def test_no_country_or_phone_library_is_needed_at_run_time() -> None:
    code = (
        "import sys\n"
        "from layersync_middleware._pii import normalize_country, hash_traits\n"
        "assert normalize_country('Austria') == 'at'\n"
        "assert 'pycountry' not in sys.modules\n"
        "assert 'phonenumbers' not in sys.modules, 'imported before a phone is parsed'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- 14.18 dates of birth -------------------------------------------------------------------
DATES = [
    ("2/16/1997", "19970216"),  # Meta's own example: month first, the day is above 12
    ("16.02.1997", "19970216"),  # day first
    ("16/2/1997", "19970216"),
    ("16-02-1997", "19970216"),
    ("05/05/1990", "19900505"),  # both parts equal: no ambiguity
    ("1997-02-16", "19970216"),
    ("1997/2/16", "19970216"),
    ("1997.02.16", "19970216"),
    ("19970216", "19970216"),
    ("1997-02-16T08:30:00Z", "19970216"),
    ("1997-02-16 08:30:00", "19970216"),
    ("16 Feb 1997", "19970216"),
    ("16 February 1997", "19970216"),
    ("February 16, 1997", "19970216"),
    ("Feb 16th, 1997", "19970216"),
    ("16-feb-1997", "19970216"),
    ("1997 Sept 1", "19970901"),
    (dt.date(1997, 2, 16), "19970216"),
    (dt.datetime(1997, 2, 16, 23, 59), "19970216"),
    ("1900-01-01", "19000101"),
]


@pytest.mark.parametrize(("raw", "expected"), DATES)
def test_dates_of_birth_in_unambiguous_forms(raw: object, expected: str) -> None:
    assert normalize_date_of_birth(raw) == expected


BAD_DATES = [
    "02/01/1990",  # ambiguous: 2 January or 1 February
    "1/2/1990",
    "16/2/97",  # two-digit year
    "2/30/1997",  # no such day
    "13/13/1997",
    "1899-12-31",  # before 1900
    "3000-01-01",
    "Smarch 3, 1997",
    "16 Feb",
    "1997-02-16; DROP TABLE",
    "16021997",  # eight digits are YYYYMMDD only
]


@pytest.mark.parametrize("raw", BAD_DATES)
def test_ambiguous_or_impossible_dates_of_birth_are_refused(raw: str) -> None:
    with pytest.raises(Unusable) as info:
        normalize_date_of_birth(raw)
    assert raw not in str(info.value)


def test_date_of_birth_is_not_in_the_future() -> None:
    today = dt.date.today()
    assert normalize_date_of_birth(today.isoformat()) == today.strftime("%Y%m%d")
    with pytest.raises(Unusable):
        normalize_date_of_birth(today + dt.timedelta(days=1))


def test_ambiguous_date_of_birth_is_dropped_and_reported() -> None:
    assert hash_traits({"date_of_birth": "02/01/1990"}) == ({}, ["date_of_birth"])


# -- 14.19 email ------------------------------------------------------------------------------
def test_email_is_nfc_then_trimmed_and_lowercased() -> None:
    composed = normalize("email", "José@Example.com")
    assert composed == normalize("email", " Jose\u0301@EXAMPLE.com\t") == "josé@example.com"


# -- 14.20 external_id --------------------------------------------------------------------------
@pytest.mark.parametrize("raw", ["user_abc123", 42])
def test_external_id_is_hashed_never_sent_raw(raw: object) -> None:
    hashed, rejected = hash_traits({"external_id": raw})
    assert rejected == [] and hashed == {"external_id": sha256_hex(str(raw))}
    assert "external_id" in (_pii.__doc__ or "")  # the rationale lives with the code


# -- 10.7 identity fields among props -------------------------------------------------------------
PII_KEYS = [
    "email",
    "Email",
    "EMAIL",
    "e_mail",
    "e-mail",
    "eMail",
    "customer_email",
    "customer.email",
    "customerEmail",
    "email_address",
    "billing.phone",
    "phone",
    "phone_number",
    "phoneNumber",
    "PhoneNumber",
    "mobile_number",
    "telephone",
    "phone2",
    "first_name",
    "firstname",
    "FirstName",
    "first-name",
    "last_name",
    "lastname",
    "surname",
    "full_name",
    "customer_name",
    "billing_name",
    "date_of_birth",
    "dateOfBirth",
    "dob",
    "DOB",
    "birthday",
    "gender",
    "city",
    "shipping_city",
    "zip",
    "zip_code",
    "zipCode",
    "shipping_zip",
    "postcode",
    "postal_code",
    "address",
    "address_line1",
    "street",
    "external_id",
    "ExternalId",
]
NOT_PII_KEYS = [
    "name",
    "product_name",
    "item_name",
    "email_opt_in",
    "phone_verified",
    "is_mobile",
    "state",
    "order_state",
    "country",
    "coupon",
    "headphone",
    "hotel",
    "value",
    "order_id",
    "email_count",
    "zipper_color",
    "",
]


@pytest.mark.parametrize("key", PII_KEYS)
def test_prop_keys_that_name_identity_fields(key: str) -> None:
    assert is_pii_key(key)


@pytest.mark.parametrize("key", NOT_PII_KEYS)
def test_prop_keys_that_do_not(key: str) -> None:
    assert not is_pii_key(key)


def test_a_huge_key_is_classified_by_its_last_words() -> None:
    assert is_pii_key("x" * 100_000 + "_email")
    assert not is_pii_key("email_" + "x" * 100_000)
