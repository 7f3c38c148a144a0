"""The README's examples run as written, and its tables agree with the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from layersync_middleware import Matcher
from layersync_middleware._ip import client_ip
from layersync_middleware._pii import normalize

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_opens_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["python3 dev.py demo", "python3 dev.py test"]


def test_testing_example_runs() -> None:
    code = section("Testing your app").split("```python", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md", "exec"), {})


def table_rows(text: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return rows[1:]


def paths(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


@pytest.mark.parametrize("row", table_rows(section("Path patterns").split("A mapping", 1)[0]))
def test_pattern_table(row: list[str]) -> None:
    matcher = Matcher([paths(row[0])[0]])
    assert all(matcher.match(p) for p in paths(row[1])), row
    assert not any(matcher.match(p) for p in paths(row[2])), row


def test_trust_proxy_table() -> None:
    for xff, hops, expected in table_rows(section("Client IP and `trust_proxy`").split("With `trust_proxy=0`")[0]):
        header = paths(xff)[0]
        assert client_ip("10.0.0.2", [header], int(hops.split()[0])) == paths(expected)[0], (xff, hops)


def test_identity_table_examples() -> None:
    traits = {
        "email": "email",
        "phone": "phone",
        "first_name": "first_name",
        "gender": "gender",
        "date_of_birth": "date_of_birth",
        "state": "state",
        "zip": "zip",
        "country": "country",
    }
    rows = table_rows(section("Identity hashing"))
    checked = 0
    for row in rows:
        trait = paths(row[0])[0]
        for raw, normalised in re.findall(r"`([^`]+)` → `([^`]+)`", row[2]):
            assert normalize(traits.get(trait, trait), raw) == normalised, (trait, raw)
            checked += 1
    assert checked >= 10
