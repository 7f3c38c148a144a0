from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from helpers import SITE, LiveHub

from layersync_middleware.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "layersync_middleware.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
    )


def test_demo_shows_paired_groups_and_exits_0() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    rows = [line.split() for line in out.splitlines() if re.match(r"^[a-z_]+\s+[a-z]+_[0-9a-f]{16}\s", line)]
    assert sorted((r[0], r[2], r[3], " ".join(r[4:])) for r in rows) == [
        ("add_to_cart", "1", "1", "paired"),
        ("purchase", "0", "1", "only server"),
        ("purchase", "1", "1", "paired"),
    ]
    assert "refused={'name_not_allowed': 1}" in out and "duplicates skipped=1" in out
    assert "sk_demo_secret" not in out + result.stderr


def test_check_reports_one_clear_line_without_the_key() -> None:
    result = run("check", env={"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "pk_live_abcdef123"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "LAYERSYNC_SECRET: is a publishable key" in result.stderr
    assert "abcdef123" not in result.stderr and "Traceback" not in result.stderr
    ok = run("check", env={"LAYERSYNC_SITE_ID": "s", "LAYERSYNC_SECRET": "sk_live_abcdef123"})
    assert ok.returncode == 0 and "settings OK" in ok.stdout and "abcdef123" not in ok.stdout


def test_send_test_event(hub: LiveHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERSYNC_SITE_ID", SITE.site_id)
    monkeypatch.setenv("LAYERSYNC_SECRET", SITE.secret_key)
    monkeypatch.setenv("LAYERSYNC_API_URL", hub.url)
    assert main(["send-test-event"]) == 0
    assert "ok: HTTP 200" in capsys.readouterr().out
    assert hub.events("server")[0]["event"]["event_name"] == "test_event"
    monkeypatch.setenv("LAYERSYNC_SECRET", "sk_wrong")
    assert main(["send-test-event"]) == 1
    assert "not delivered: HTTP 401" in capsys.readouterr().err


def test_send_test_event_to_nowhere_is_bounded(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAYERSYNC_SITE_ID", "s")
    monkeypatch.setenv("LAYERSYNC_SECRET", "sk_x")
    monkeypatch.setenv("LAYERSYNC_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LAYERSYNC_TIMEOUT_MS", "500")
    assert main(["send-test-event"]) == 1
    assert "no response" in capsys.readouterr().err


def test_hub_command_help() -> None:
    result = run("hub", "--help")
    assert result.returncode == 0 and "--db" in result.stdout and "--fault" in result.stdout


def test_hub_command_serves_ingest_and_the_page(tmp_path: object) -> None:
    import time

    import httpx
    from servers import free_port

    port = free_port()
    db = str(tmp_path) + "/hub.sqlite3"  # type: ignore[operator]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LAYERSYNC_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "layersync_middleware.cli",
            "hub",
            "--port",
            str(port),
            "--db",
            db,
            "--site",
            "site_x",
            "--secret-key",
            "sk_x_secret",
            "--publishable-key",
            "pk_x_pub",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        body = {"site_id": "site_x", "event_id": "pur_0123456789abcdef", "event_name": "purchase", "event_time": 1}
        r = httpx.post(
            url + "/api/v1/events/server",
            json=body,
            headers={"Authorization": "Bearer sk_x_secret", "X-LayerSync-Site-Id": "site_x"},
        )
        assert r.status_code == 200
        assert httpx.get(url + "/api/hub/groups").json()["groups"][0]["event_id"] == "pur_0123456789abcdef"
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert f"LayerSync local hub on http://127.0.0.1:{port}" in out and "sk_x_secret" not in out
