from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import SITE
from servers import free_port, wait_until_serving

from layersync_middleware._version import __version__
from layersync_middleware.cli import main
from layersync_middleware.hub import HubServer, create_hub
from layersync_middleware.hub.sites import DEMO_SITE

Cli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``layersync ARGS`` in this process (measured by coverage, no interpreter to start),
    with only the ``env`` given of the ``LAYERSYNC_*`` variables; answers as ``run`` does."""

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        for name in [n for n in os.environ if n.startswith("LAYERSYNC_")]:
            monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit:  # argparse's --help and usage errors
            code = int(exit.code or 0)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return call


def test_demo_shows_a_group_of_each_verdict_and_exits_0(cli: Cli) -> None:
    result = cli("demo", "--no-wait")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    rows = [line.split(None, 4) for line in out.splitlines() if re.match(r"^\w+\s+\w+_\w+\s+\d+\s+\d+\s", line)]
    assert sorted((r[0], r[2], r[3], r[4]) for r in rows) == [
        ("Lead", "1", "0", "Name mismatch"),
        ("add_to_cart", "1", "1", "Paired"),
        ("lead", "0", "1", "Name mismatch"),
        ("purchase", "0", "1", "Server only"),
        ("purchase", "1", "1", "Late pair"),
        ("purchase", "1", "1", "Paired"),
        ("purchase", "2", "0", "ID reused"),
        ("view_item", "1", "0", "Browser only"),
    ]
    assert "refused={'name_not_allowed': 1}" in out and "duplicates skipped=1" in out
    # It ends with the page's address and the count per verdict.
    *_, page, verdicts = out.strip().splitlines()
    assert re.fullmatch(r"page: +http://127\.0\.0\.1:\d+/ .*", page)
    assert verdicts.split(None, 1)[1] == (
        "paired 2, browser only 1, server only 1, name mismatch 2, id reused 1, late pair 1"
    )
    assert "sk_demo_secret" not in out + result.stderr


def test_check_reports_one_clear_line_without_the_key(cli: Cli) -> None:
    result = cli("check", env={"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "pk_live_abcdef123"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "LAYERSYNC_SECRET: is a publishable key" in result.stderr
    assert "abcdef123" not in result.stderr and "Traceback" not in result.stderr
    ok = cli("check", env={"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_live_abcdef123"})
    assert ok.returncode == 0 and "settings OK" in ok.stdout and "abcdef123" not in ok.stdout


@pytest.fixture
def private_hub() -> Iterator[HubServer]:
    # Its own hub, not the shared one: the tests below change its faults.
    with HubServer(create_hub([SITE])) as server:
        yield server
    server.app.hub.store.close()


def use_hub(monkeypatch: pytest.MonkeyPatch, url: str, secret: str = SITE.secret_key, timeout_ms: int = 1000) -> None:
    for name in [n for n in os.environ if n.startswith("LAYERSYNC_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAYERSYNC_SITE_ID", SITE.site_id)
    monkeypatch.setenv("LAYERSYNC_SECRET", secret)
    monkeypatch.setenv("LAYERSYNC_API_URL", url)
    monkeypatch.setenv("LAYERSYNC_TIMEOUT_MS", str(timeout_ms))


def test_send_test_event(
    private_hub: HubServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_hub(monkeypatch, private_hub.url)
    assert main(["send-test-event"]) == 0
    assert "ok: HTTP 200" in capsys.readouterr().out
    events = httpx.get(private_hub.url + "/api/hub/events").json()["events"]
    assert [e["event"]["event_name"] for e in events] == ["test_event"]


def test_send_test_event_says_what_to_check_on_a_401(
    private_hub: HubServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    use_hub(monkeypatch, private_hub.url, secret="sk_wrong_secret")
    assert main(["send-test-event"]) == 1
    err = capsys.readouterr().err
    assert "not delivered: HTTP 401" in err and "LAYERSYNC_SECRET" in err and "LAYERSYNC_SITE_ID" in err
    assert f"site {SITE.site_id}" in err and "sk_wrong_secret" not in err
    assert "layersync hub` prints the ones it accepts" in err  # a loopback hub: the demo's keys are named


def test_send_test_event_to_a_closed_port_is_bounded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_hub(monkeypatch, f"http://127.0.0.1:{closed_port()}", timeout_ms=1000)
    started = time.monotonic()
    assert main(["send-test-event"]) == 1
    assert time.monotonic() - started < 1 + 2
    err = capsys.readouterr().err
    assert "no response" in err and "is the hub at LAYERSYNC_API_URL running" in err


def test_send_test_event_to_a_hanging_hub_is_bounded(
    private_hub: HubServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    httpx.post(private_hub.url + "/api/hub/faults", json={"mode": "hang", "hang_seconds": 60}).raise_for_status()
    use_hub(monkeypatch, private_hub.url, timeout_ms=1500)
    started = time.monotonic()
    assert main(["send-test-event"]) == 1
    assert time.monotonic() - started < 1.5 + 2
    assert "nothing answered within 1.5 s" in capsys.readouterr().err


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HubCommand:
    url: str
    proc: subprocess.Popen[str]
    output: str = ""  # once it ended: what it printed (when the test read none of it itself)


@contextmanager
def hub_command(*args: str) -> Iterator[HubCommand]:
    """``layersync hub`` on a free port, until the block ends."""
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSYNC_")}
    command = [sys.executable, "-m", "layersync_middleware", "hub", "--port", str(port), *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean)
    hub = HubCommand(f"http://127.0.0.1:{port}", proc)
    try:
        wait_until_serving(hub.url, proc, "layersync hub")
        yield hub
    finally:
        proc.terminate()
        hub.output, _ = proc.communicate(timeout=10)  # and closes the pipe


def test_hub_command_serves_ingest_and_the_page(tmp_path: Path) -> None:
    keys = ["--site", "site_x", "--secret-key", "sk_x_secret", "--publishable-key", "pk_x_pub"]
    with hub_command("--db", str(tmp_path / "hub.sqlite3"), *keys) as hub:
        url = hub.url
        body = {"site_id": "site_x", "event_id": "pur_0123456789abcdef", "event_name": "purchase", "event_time": 1}
        r = httpx.post(
            url + "/api/v1/events/server",
            json=body,
            headers={"Authorization": "Bearer sk_x_secret", "X-LayerSync-Site-Id": "site_x"},
        )
        assert r.status_code == 200
        assert httpx.get(url + "/api/hub/groups").json()["groups"][0]["event_id"] == "pur_0123456789abcdef"
    assert f"LayerSync local hub on {url}" in hub.output and "pk_x_pub" in hub.output
    assert "sk_x_secret" not in hub.output  # a key of the user's own is not echoed


def test_hub_command_prints_the_demo_credentials_it_accepts() -> None:
    with hub_command("--db", ":memory:") as hub:
        url, stdout = hub.url, hub.proc.stdout
        assert stdout is not None
        lines = [stdout.readline() for _ in range(6)]
        printed = dict(part.split("=", 1) for part in lines[-1].split())
        event = {
            "site_id": printed["LAYERSYNC_SITE_ID"],
            "event_id": "pur_1",
            "event_name": "purchase",
            "event_time": 1,
        }
        r = httpx.post(
            printed["LAYERSYNC_API_URL"] + "/api/v1/events/server",
            json=event,
            headers={
                "Authorization": "Bearer " + printed["LAYERSYNC_SECRET"],
                "X-LayerSync-Site-Id": printed["LAYERSYNC_SITE_ID"],
            },
        )
    assert r.status_code == 200 and printed["LAYERSYNC_API_URL"] == url
    assert printed["LAYERSYNC_SECRET"] == DEMO_SITE.secret_key
    assert any(DEMO_SITE.publishable_key in line for line in lines)


@pytest.mark.parametrize("command", ["hub", "demo", "send-test-event", "check"])
def test_every_subcommand_help_shows_defaults(cli: Cli, command: str) -> None:
    result = cli(command, "--help")
    shown = " ".join(result.stdout.split())  # argparse wraps lines
    assert result.returncode == 0 and "usage: layersync " + command in shown
    if command == "hub":
        assert "(default: 8787)" in shown and "(default: 127.0.0.1)" in shown
        assert f"(default: {DEMO_SITE.secret_key})" in shown
    if command == "send-test-event":
        assert "(default: test_event)" in shown


def test_version_and_python_dash_m() -> None:
    version = subprocess.run(
        [sys.executable, "-m", "layersync_middleware", "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.strip() == f"layersync {__version__}"
    helped = subprocess.run([sys.executable, "-m", "layersync_middleware", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "send-test-event" in helped.stdout


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "LAYERSYNC_SITE_ID"),
        ({"LAYERSYNC_SECRET": "sk_live_abcdef123"}, "LAYERSYNC_SITE_ID"),
        ({"LAYERSYNC_SITE_ID": "s"}, "LAYERSYNC_SECRET"),
        ({"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_MATCHER": "api/*"}, "LAYERSYNC_MATCHER"),
        (
            {"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_TIMEOUT_MS": "soon"},
            "LAYERSYNC_TIMEOUT_MS",
        ),
    ],
)
def test_check_fails_naming_the_setting(cli: Cli, env: dict[str, str], named: str) -> None:
    result = cli("check", env=env)
    assert result.returncode == 2 and result.stderr.startswith(f"layersync: {named}")
    assert "Traceback" not in result.stderr and "abcdef123" not in result.stderr


def test_check_prints_the_names_each_pattern_allows(cli: Cli) -> None:
    matcher = "/api/cart/*, /api/orders, /api/*, /api/refunds/*=refund|purchase, /hooks/*=*"
    result = cli("check", env={"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x", "LAYERSYNC_MATCHER": matcher})
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    # A wildcard pattern is not a URL: the SDK names /api/checkout/complete purchase,
    # /api/checkout/start begin_checkout (issue 20, B3).
    assert any(line.startswith("/api/cart/* -> the name the browser SDK stamps on each URL") for line in lines)
    assert "/api/orders -> purchase (the browser SDK's name for this URL)" in lines
    assert "/api/refunds/* -> purchase, refund" in lines and "/hooks/* -> any event name" in lines
    # Then the SDK's own rules, each named as the SDK names it, in its order.
    rules = [line.split()[0] for line in lines[lines.index("/hooks/* -> any event name") + 3 :][:15]]
    assert rules == ["purchase"] * 5 + ["add_to_cart"] * 7 + ["begin_checkout"] * 3, lines
    assert "\\bwc-ajax=checkout\\b" in result.stdout and "do not pair" in result.stdout


def test_cli_and_demo_credentials_work_without_the_hub_extra() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"starlette", "uvicorn"}:
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from layersync_middleware.hub import DEMO_SITE
from layersync_middleware.cli import main
assert DEMO_SITE.site_id == "site_demo"
sys.exit(main(sys.argv[1:]))
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSYNC_")}
    env = {**clean, "LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_x"}
    check = subprocess.run([sys.executable, "-c", code, "check"], capture_output=True, text=True, env=env, timeout=60)
    assert check.returncode == 0 and "settings OK" in check.stdout, check.stderr
    hub = subprocess.run([sys.executable, "-c", code, "hub"], capture_output=True, text=True, env=env, timeout=60)
    assert hub.returncode == 2 and "pip install 'layersync-middleware[hub]'" in hub.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--fault", "500", "--fault-rate", "2"], "layersync: --fault-rate: rate must be a number from 0 to 1, got 2"),
        (["--allow-peer", "nonsense"], "layersync: --allow-peer: 'nonsense' is not an IP address or network"),
    ],
)
def test_hub_refuses_a_bad_option_naming_it_before_serving(cli: Cli, args: list[str], said: str) -> None:
    result = cli("hub", "--db", ":memory:", *args)
    assert result.returncode == 2 and result.stderr.startswith(said) and result.stdout == ""  # nothing served


def test_hub_says_how_to_point_an_app_at_it_and_never_echoes_a_key_of_your_own(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(options))
    database = tmp_path / "new" / "dir" / "hub.db"
    keys = ["--site", "site_x", "--secret-key", "sk_x_my_own_secret", "--publishable-key", "pk_x_pub"]
    result = cli("hub", "--db", str(database), "--port", "8799", "--fault", "500", "--fault-rate", "0.5", *keys)
    assert result.returncode == 0 and database.parent.is_dir()  # made for it
    assert "LAYERSYNC_API_URL=http://127.0.0.1:8799 LAYERSYNC_SITE_ID=site_x LAYERSYNC_SECRET=<your --secret-key>" in (
        result.stdout
    )
    assert "injecting fault 500 on 50% of server ingest requests" in result.stdout
    assert "sk_x_my_own_secret" not in result.stdout + result.stderr
    assert served == [
        {"host": "127.0.0.1", "port": 8799, "log_level": "warning", "timeout_graceful_shutdown": 1, "http": "h11"}
    ]
    demo = cli("hub", "--db", ":memory:")  # the demo's keys are public: shown, to copy
    assert f"LAYERSYNC_SECRET={DEMO_SITE.secret_key}" in demo.stdout
