"""The README's examples run as written, and its tables agree with the code."""

from __future__ import annotations

import json
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

from layersync_middleware import LayerSync, Matcher
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


def pip_lines() -> list[str]:
    """Every `pip install` of the README: in its sh blocks and in its prose."""
    blocks = [line for command in command_lines() for line in [command] if line.startswith("pip install")]
    inline = re.findall(r"`(pip install [^`]+)`", README)
    return blocks + [line for line in inline if line not in blocks]


@pytest.mark.slow
def test_install_lines_resolve(tmp_path: Path) -> None:
    # Every `pip install` line of the README, as written from the folder above a clone.
    lines = pip_lines()
    assert len(lines) >= 8 and all("./layersync-middleware" in line for line in lines), lines
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


# -- every command line of the README is run by a test ----------------------------------------------------
def command_lines() -> list[str]:
    """The commands of the README's sh blocks, continuations joined, comments cut."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = re.split(r"\s+# ", line, maxsplit=1)[0].strip()
            if command and not command.startswith("#"):  # a comment line says what follows
                lines.append(" ".join(command.split()))
    return lines


# Each command line of the README and the tests that run it as written (or, for a line that
# builds a venv in the checkout or needs a tool CI does not install, the part that can run).
# A line added to the README without a row here fails; so does a row whose line is gone.
HERE = "tests/test_readme.py::"
COMMANDS: dict[str, tuple[str, ...]] = {
    "python3 dev.py demo": (
        HERE + "test_dev_py_runs_what_the_readme_says",
        "tests/test_cli.py::test_demo_shows_a_group_of_each_verdict_and_exits_0",
    ),
    "python3 dev.py test": (HERE + "test_dev_py_runs_what_the_readme_says",),  # and CI runs it as written: .ci/run
    "python3 dev.py test tests/delivery/test_core.py -q": (HERE + "test_dev_py_runs_what_the_readme_says",),
    "python3 dev.py lint": (HERE + "test_dev_py_runs_what_the_readme_says",),
    "git clone <this repository> layersync-middleware": (HERE + "test_install_lines_resolve",),  # the clone: a symlink
    "pip install ./layersync-middleware": (HERE + "test_install_lines_resolve",),
    'pip install "./layersync-middleware[flask]"': (HERE + "test_install_lines_resolve",),
    'pip install "./layersync-middleware[django]"': (HERE + "test_install_lines_resolve",),
    'pip install "./layersync-middleware[hub]"': (
        HERE + "test_install_lines_resolve",
        HERE + "test_a_fresh_venv_runs_the_layersync_commands",
    ),
    'pip install "./layersync-middleware[phone]"': (HERE + "test_install_lines_resolve",),
    'pip install "./layersync-middleware[celery,redis]"': (HERE + "test_install_lines_resolve",),
    'pip install "./layersync-middleware[prometheus]"': (HERE + "test_install_lines_resolve",),
    'pip install "./layersync-middleware[otel]"': (HERE + "test_install_lines_resolve",),
    "curl -X POST http://127.0.0.1:8000/api/cart/add -H 'X-LayerSync-Event-Id: atc_0123456789abcdef' "
    "-H 'X-LayerSync-Event-Name: add_to_cart' -H 'Content-Type: application/json' -d '{\"item_id\": \"SKU-A\"}'": (
        HERE + "test_curl_recipe_pairs",
    ),
    "LAYERSYNC_METRICS=prometheus uvicorn shop.main:app": (
        "tests/test_metrics.py::test_scrape_from_fastapi_under_uvicorn_equals_stats",
    ),
    "rm -rf /tmp/layersync-metrics && mkdir /tmp/layersync-metrics": (
        "tests/test_metrics.py::test_scrape_from_flask_under_gunicorn_with_two_workers_equals_the_sum_of_their_stats",
    ),
    "PROMETHEUS_MULTIPROC_DIR=/tmp/layersync-metrics LAYERSYNC_METRICS=prometheus "
    "gunicorn -w 2 -c gunicorn.conf.py shop.wsgi:app": (
        "tests/test_metrics.py::test_scrape_from_flask_under_gunicorn_with_two_workers_equals_the_sum_of_their_stats",
        HERE + "test_the_gunicorn_conf_is_the_tested_one",
    ),
    # The fleet: Celery's own Django layout and worker command, and a FastAPI app with its Celery app in code.
    "celery -A proj worker -l INFO": (
        "tests/test_celery.py::test_a_django_project_made_as_celerys_guide_delivers_every_event_with_the_guides_worker",
    ),
    "celery -A shop.celery worker -l INFO": (
        FLEET := "tests/test_celery.py::"
        "test_a_fastapi_app_with_the_broker_in_code_delivers_every_event_and_shows_the_workers_counts",
    ),
    "LAYERSYNC_SENDER=celery uvicorn shop.web:app": (FLEET,),
    "curl -s 'http://127.0.0.1:8787/api/hub/events?limit=1000'": (HERE + "test_hub_curl_lines_answer",),
    "curl -s 'http://127.0.0.1:8787/api/hub/events?limit=1000&before=8123'": (HERE + "test_hub_curl_lines_answer",),
    "curl -s 'http://127.0.0.1:8787/api/hub/groups?verdict=name_mismatch&name=purchase'": (
        HERE + "test_hub_curl_lines_answer",
    ),
    "layersync hub": ("tests/test_cli.py::test_hub_command_serves_ingest_and_the_page",),
    "layersync demo": ("tests/test_cli.py::test_demo_shows_a_group_of_each_verdict_and_exits_0",),
    "layersync check": (
        HERE + "test_a_fresh_venv_runs_the_layersync_commands",
        "tests/test_cli.py::test_check_reports_one_clear_line_without_the_key",
    ),
    "layersync send-test-event": (
        HERE + "test_a_fresh_venv_runs_the_layersync_commands",
        "tests/test_cli.py::test_send_test_event",
    ),
    "layersync --version": (
        HERE + "test_a_fresh_venv_runs_the_layersync_commands",
        "tests/test_cli.py::test_version_and_python_dash_m",
    ),
    "python scripts/matrix.py": (
        HERE + "test_dev_py_runs_what_the_readme_says",
        "tests/test_matrix.py::test_unknown_jobs_are_refused",
    ),
    "tox": (HERE + "test_tox_runs_what_the_readme_says",),
    "HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_properties.py": (
        HERE + "test_the_long_hypothesis_profile_is_20000_examples",
    ),
}


def test_every_command_line_is_tested() -> None:
    lines = command_lines()
    assert sorted(set(lines)) == sorted(COMMANDS)
    missing = []
    for tests in COMMANDS.values():
        for test in tests:
            file, _, name = test.partition("::")
            if f"def {name}(" not in (ROOT / file).read_text():
                missing.append(test)
    assert missing == []


@pytest.mark.slow
def test_a_fresh_venv_runs_the_layersync_commands(tmp_path: Path, hub: Any) -> None:
    # The Install line for the hub, installed for real (not --dry-run) into a new venv from
    # the folder above a clone, then the README's `layersync` lines with that venv's script.
    import venv

    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    (tmp_path / "layersync-middleware").symlink_to(ROOT)
    [line] = [line for line in pip_lines() if "[hub]" in line]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAYERSYNC_", "PYTHON"))}
    install = [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", *shlex.split(line)[2:]]
    result = subprocess.run(install, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    env |= {
        "LAYERSYNC_SITE_ID": hub_site().site_id,
        "LAYERSYNC_SECRET": hub_site().secret_key,
        "LAYERSYNC_API_URL": hub.url,
    }
    said = {}
    for command in ("layersync check", "layersync send-test-event", "layersync --version"):
        args = [str(bin_dir / "layersync"), *shlex.split(command)[1:]]
        result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stdout, result.stderr[-2000:])
        said[command] = result.stdout
    from layersync_middleware import __version__

    assert __version__ in said["layersync --version"]
    assert "sk_" not in said["layersync check"] + said["layersync send-test-event"]
    [stored] = hub.events("server")
    assert stored["source"] == "server"


def test_hub_curl_lines_answer(hub: Any) -> None:
    # The hub's curl lines, as written, against a live hub (its address for 127.0.0.1:8787).
    lines = [line for line in command_lines() if line.startswith("curl -s 'http://127.0.0.1:8787/")]
    assert len(lines) >= 3 and shutil.which("curl"), "curl is needed (CI installs it)"
    for line in lines:
        command = [part.replace("http://127.0.0.1:8787", hub.url) for part in shlex.split(line)]
        result = subprocess.run([*command, "--fail"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (line, result.stderr)
        answer = json.loads(result.stdout)
        assert "truncated" in answer and ("events" in answer or "groups" in answer), (line, answer)


def test_dev_py_runs_what_the_readme_says(monkeypatch: pytest.MonkeyPatch) -> None:
    # dev.py builds ./.venv in the checkout, so a test cannot run it as written: it runs its
    # commands with `run` recorded, and checks they are what the README says each line does.
    import importlib.util

    spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    ran: list[list[str]] = []
    venvs: list[str] = []

    def shown(part: object) -> str:
        # As a reader sees them: the venv's python and scripts by name, the repo's files relative.
        path = Path(str(part))
        if path == Path(dev.PY) or str(part) == sys.executable:
            return "python"
        if path.parent == Path(dev.BIN):
            return path.name
        return str(path.relative_to(ROOT)) if path.is_absolute() and ROOT in path.parents else str(part)

    monkeypatch.setattr(dev, "run", lambda *cmd, env=None: ran.append([shown(c) for c in cmd]))
    monkeypatch.setattr(dev, "ensure_venv", venvs.append)
    monkeypatch.setattr(dev.shutil, "which", lambda name: None)  # no npm: the e2e install is skipped

    def dev_py(line: str) -> list[list[str]]:
        ran.clear()
        venvs.clear()
        monkeypatch.setattr(sys, "argv", shlex.split(line)[1:])
        dev.main()
        return list(ran)

    lint = [
        ["python", "-m", "ruff", "check", "."],
        ["python", "-m", "ruff", "format", "--check", "."],
        ["python", "-m", "mypy"],
    ]
    assert dev_py("python3 dev.py demo") == [["layersync", "demo"]] and venvs == ["hub"]
    assert dev_py("python3 dev.py lint") == lint and venvs == ["dev"]
    assert dev_py("python3 dev.py test tests/delivery/test_core.py -q") == [
        *lint,
        ["python", "-m", "pytest", "tests/delivery/test_core.py", "-q"],
    ]
    assert dev_py("python3 dev.py test")[len(lint) :] == [
        ["python", "-m", "coverage", "run", "-m", "pytest"],
        ["python", "-m", "coverage", "report"],
        ["python", "scripts/matrix.py"],  # the version matrix, as its own README line runs it
    ]


def test_tox_runs_what_the_readme_says() -> None:
    # "tox: the same, for those who use tox (envs py310-py313, min, lint)": the same code as dev.py.
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    assert [env.strip() for env in tox["tox"]["envlist"].split(",")] == [
        "py310",
        "py311",
        "py312",
        "py313",
        "min",
        "lint",
    ]
    assert tox["testenv:min"]["commands"].split() == ["python", "scripts/matrix.py", "min", "--", "{posargs}"]
    assert tox["testenv:lint"]["commands"].split() == ["python", "dev.py", "lint"]
    assert tox["testenv"]["extras"].strip() == "dev"


def test_the_long_hypothesis_profile_is_20000_examples() -> None:
    # HYPOTHESIS_PROFILE=long: 20,000 examples per property, as the README says.
    code = "import test_properties; print(test_properties.PROFILE.max_examples)"
    env = {**os.environ, "HYPOTHESIS_PROFILE": "long", "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.stdout.strip() == "20000", result.stderr[-2000:]
    assert "HYPOTHESIS_PROFILE=long" in section("Development") and "20,000 examples" in section("Development")


# -- the Metrics section ------------------------------------------------------------------------------------
METRICS = section("Metrics")


@pytest.mark.parametrize("title", ["FastAPI / Starlette", "Flask", "Django"])
def test_metrics_snippet_serves_the_scrape(title: str, tmp_path: Path) -> None:
    code = python_blocks(METRICS.split(f"**{title}**", 1)[1])[0]
    with LayerSync(site_id="s", secret_key="sk_x", api_url="http://127.0.0.1:9", metrics="prometheus"):
        if title == "Django":  # configured once per process: a fresh one serves the README's urls.py
            (tmp_path / "readme_urls.py").write_text(code)
            script = (
                "import django; from django.conf import settings\n"
                "settings.configure(ROOT_URLCONF='readme_urls', ALLOWED_HOSTS=['testserver'])\n"
                "django.setup()\nfrom django.test import Client\n"
                "r = Client().get('/metrics'); print(r.status_code, r['Content-Type']); print(r.content.decode())"
            )
            env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "LAYERSYNC_METRICS": "prometheus"}
            result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
            status, body = result.stdout.split("\n", 1) if result.stdout else ("", result.stderr)
        elif title == "Flask":
            response = run_snippet(code)["app"].test_client().get("/metrics")
            status, body = f"{response.status_code} {response.content_type}", response.get_data(as_text=True)
        else:
            from starlette.testclient import TestClient

            with TestClient(run_snippet(code)["app"]) as client:
                response = client.get("/metrics")
            status, body = f"{response.status_code} {response.headers['content-type']}", response.text
    assert status.startswith("200 text/plain; version="), (
        status,
        body[-2000:],
    )
    if (
        title != "Django"
    ):  # this process's client; Django's process shows the instruments' names only if one is made there
        assert "layersync_sender_queue_capacity" in body


def test_the_gunicorn_conf_is_the_tested_one() -> None:
    conf = python_blocks(METRICS.split("`gunicorn.conf.py`", 1)[1])[0]
    tested = (ROOT / "tests" / "metrics_apps" / "gunicorn_conf.py").read_text()
    assert conf.strip() in tested.splitlines()


def test_the_metrics_table_names_every_instrument() -> None:
    from layersync_middleware.metrics import COUNTERS, GAUGES, HISTOGRAMS, otel_name, prometheus_name

    rows = table_rows(METRICS)
    documented = {(paths(row[0])[0], paths(row[0])[1], paths(row[1])[0]) for row in rows}
    expected = {(otel_name(n), unit, prometheus_name(n, unit) + "_total") for n, (unit, _, _) in COUNTERS.items()}
    expected |= {(otel_name(n), unit, prometheus_name(n, unit)) for n, (unit, _) in GAUGES.items()}
    expected |= {(otel_name(n), "s", prometheus_name(n, "s")) for n in HISTOGRAMS}
    assert documented == expected
    for row in rows:  # the labels each one has, and only those
        name = paths(row[0])[0].removeprefix("layersync.sender.")
        labels = COUNTERS[name][1] if name in COUNTERS else HISTOGRAMS[name][0] if name in HISTOGRAMS else ()
        assert tuple(label.split(":")[0].strip("` ") for label in [row[3]] if label) == labels, row


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


def test_no_merge_conflict_is_left_in_the_docs() -> None:
    for doc in ("README.md", "CHANGELOG.md", "docs/wire.md", "bench/README.md", "example_apps/README.md"):
        lines = (ROOT / doc).read_text().splitlines()
        assert not [
            n for n, line in enumerate(lines, 1) if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="
        ], doc
