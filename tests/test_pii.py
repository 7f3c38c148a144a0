from __future__ import annotations

import datetime as dt

import pytest

from layersync_middleware._pii import Unusable, hash_traits, normalize, sha256_hex

# trait, input, normalised (what is hashed), SHA-256 of the normalised value
TABLE = [
    (
        "email",
        "  Ada@Example.COM ",
        "ada@example.com",
        "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72",
    ),
    ("phone", "+1 (555) 123-4567", "15551234567", "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"),
    (
        "phone",
        "+44 (0)20 7946 0958",
        "442079460958",
        "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823",
    ),
    ("phone", "0044 20 7946 0958", "442079460958", "35e206e5dec4c89b9e8b71b8c32724a5bb518483ac5a20c6617d738375b3b823"),
    ("phone", "1-555-123-4567", "15551234567", "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a"),
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
