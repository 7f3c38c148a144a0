"""The README's examples run as written, and its tables agree with the code."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


# -- the README's snippets are the tested ones ------------------------------------------------------------
WIRING = section("Wiring it in")
ROOT = Path(__file__).resolve().parent.parent
SNIPPETS = ["FastAPI / Starlette", "Flask", "Any WSGI app"]
PAIRED = {"X-LayerSync-Event-Id": "atc_0123456789abcdef", "X-LayerSync-Event-Name": "add_to_cart"}


def python_blocks(text: str) -> list[str]:
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def wiring_snippet(title: str) -> str:
    return python_blocks(WIRING.split(f"**{title}**", 1)[1])[0]


@pytest.fixture
def layersync_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSYNC_SITE_ID", "site_readme")
    monkeypatch.setenv("LAYERSYNC_SECRET", "sk_readme_secret")
    monkeypatch.setenv("LAYERSYNC_API_URL", "http://127.0.0.1:9")


def run_snippet(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("title", SNIPPETS)
def test_wiring_snippet_pairs(layersync_env: None, title: str) -> None:
    from layersync_middleware.testing import capture_events

    # Adapters configured alike share one client, and it forwards a pair once: one id each.
    event_id = f"atc_{SNIPPETS.index(title):016x}"
    paired = {**PAIRED, "X-LayerSync-Event-Id": event_id}
    ns = run_snippet(wiring_snippet(title))
    with capture_events() as captured:
        if title.startswith("FastAPI"):
            from starlette.testclient import TestClient

            ns["app"].post("/api/cart/add")(lambda: {"ok": True})
            with TestClient(ns["app"]) as client:
                assert client.post("/api/cart/add", headers=paired).status_code == 200
        elif title == "Flask":
            ns["app"].post("/api/cart/add")(lambda: {"ok": True})
            assert ns["app"].test_client().post("/api/cart/add", headers=paired).status_code == 200
        else:
            from werkzeug.test import Client

            assert Client(ns["application"]).post("/api/cart/add", headers=paired).status_code == 200
        captured.wait_for(1)
    [event] = captured.events
    assert (event["site_id"], event["event_id"]) == ("site_readme", event_id)


def test_django_wiring_snippet_pairs(tmp_path: Path) -> None:
    # Django is configured once per process: a fresh one runs the README's settings.
    (tmp_path / "readme_settings.py").write_text(
        python_blocks(WIRING.split("**Django**", 1)[1])[0]
        + '\nSECRET_KEY = "x"\nROOT_URLCONF = "readme_urls"\nALLOWED_HOSTS = ["testserver"]\n'
    )
    (tmp_path / "readme_urls.py").write_text(
        "from django.http import JsonResponse\nfrom django.urls import path\n"
        "from django.views.decorators.csrf import csrf_exempt\n"
        "urlpatterns = [path('api/cart/add', csrf_exempt(lambda request: JsonResponse({'ok': True})))]\n"
    )
    script = """
import django
django.setup()
from django.test import Client
from layersync_middleware.testing import capture_events
with capture_events() as captured:
    r = Client().post("/api/cart/add", HTTP_X_LAYERSYNC_EVENT_ID="atc_0123456789abcdef",
                      HTTP_X_LAYERSYNC_EVENT_NAME="add_to_cart")
    assert r.status_code == 200, r.status_code
    captured.wait_for(1)
print([e["event_id"] for e in captured.events])
"""
    env = {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
        "DJANGO_SETTINGS_MODULE": "readme_settings",
        "LAYERSYNC_SITE_ID": "site_readme",
        "LAYERSYNC_SECRET": "sk_readme_secret",
        "LAYERSYNC_API_URL": "http://127.0.0.1:9",
    }
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "['atc_0123456789abcdef']", result.stderr[-2000:]


@pytest.mark.slow
def test_wiring_snippets_type_check(tmp_path: Path) -> None:
    # What users write must pass mypy --strict (Starlette's add_middleware once did not).
    for i, title in enumerate(SNIPPETS):
        (tmp_path / f"snippet_{i}.py").write_text(wiring_snippet(title))
    (tmp_path / "snippet_django_settings.py").write_text(python_blocks(WIRING.split("**Django**", 1)[1])[0])
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_curl_recipe_pairs(hub: Any) -> None:
    from servers import serve

    recipe = section("Wiring it in").split("```sh\n", 1)[1].split("```", 1)[0]
    command = shlex.split(recipe.replace("\\\n", " "))
    assert command[0] == "curl" and shutil.which("curl"), "curl is needed (CI installs it)"
    env = {
        "LAYERSYNC_SITE_ID": hub_site().site_id,
        "LAYERSYNC_SECRET": hub_site().secret_key,
        "LAYERSYNC_API_URL": hub.url,
    }
    with serve("uvicorn", "example_apps.fastapi_app:app", env) as url:
        command = [part.replace("http://127.0.0.1:8000", url) for part in command]
        result = subprocess.run([*command, "--silent", "--fail"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 10
        while not hub.events("server") and time.monotonic() < deadline:
            time.sleep(0.05)
    [stored] = hub.events("server")
    assert stored["event"]["event_id"] == "atc_0123456789abcdef"


def hub_site() -> Any:
    from helpers import SITE

    return SITE


@pytest.mark.slow
def test_install_lines_resolve(tmp_path: Path) -> None:
    # Every `pip install` line of the README, as written from the folder above a clone.
    block = section("Install").split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("pip install")]
    assert len(lines) >= 5
    clone = tmp_path / "layersync-middleware"
    clone.symlink_to(ROOT)
    for line in lines:
        args = shlex.split(line)[2:]
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, (line, result.stderr[-2000:])


def test_every_test_the_readme_names_exists() -> None:
    # "A promise in the README is a test": each `tests/x.py::name` (or `::name` after one)
    # must name a test function that exists.
    named = re.findall(r"`((?:tests/[\w/]+\.py)?::\w+|tests/[\w/]+\.py)(?:\[[^\]]*\])?`", README)
    current: Path | None = None
    missing = []
    for ref in named:
        file, _, name = ref.partition("::")
        if file:
            current = ROOT / file
            if not current.exists():
                missing.append(ref)
                continue
        if name and (current is None or f"def {name}(" not in current.read_text()):
            missing.append(f"{current}::{name}")
    assert len(named) >= 40
    assert missing == []
