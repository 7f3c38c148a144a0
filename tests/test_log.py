from __future__ import annotations

import io
import logging
from typing import Any

import pytest

from layersync_middleware._log import RateLimitedLog, safe


def test_once_per_interval_then_says_how_many_were_held(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("layersync_middleware._log.time.monotonic", lambda: now[0])
    log = RateLimitedLog(interval=60)
    caplog.set_level(logging.WARNING, "layersync")
    for _ in range(5):
        log.warn("k", "refused %s", "x")
    log.warn("other", "another kind")
    assert [r.getMessage() for r in caplog.records] == ["refused x", "another kind"]
    now[0] += 61
    log.warn("k", "refused %s", "y")
    assert caplog.records[-1].getMessage() == "refused y (4 more like this in the last 60s)"


def test_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "layersync")
    RateLimitedLog().warn("e", "bad", level=logging.ERROR)
    assert caplog.records[0].levelno == logging.ERROR


FORGED = "/api/cart/x\n[LayerSync] ERROR the hub refused the secret key (HTTP 401)"


def test_a_path_cannot_write_a_log_line_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("layersync.test_injection")
    logger.addHandler(handler)
    caplog.set_level(logging.WARNING, "layersync")
    try:
        RateLimitedLog(logger).warn("k", "refused malformed pairing headers on %s", FORGED)
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().count("\n") == 1  # the record's own line end, nothing more
    message = caplog.records[0].getMessage()
    assert "\n" not in message and "x\\n[LayerSync]" in message


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\rb", "a\\rb"),
        ("a\nb", "a\\nb"),
        ("a\x00b", "a\\x00b"),
        ("a\x1b[31mb", "a\\x1b[31mb"),  # a terminal colour code
        ("a\x85b", "a\\x85b"),  # NEL, a C1 line end
        ("a\u2028b\u2029c", "a\\u2028b\\u2029c"),
        ("a\u202eb", "a\\u202eb"),  # right-to-left override
        ("café /ok path", "café /ok path"),
    ],
)
def test_safe_escapes_what_could_break_a_line(raw: str, shown: str) -> None:
    assert safe(raw) == shown


def test_safe_truncates_and_takes_any_object() -> None:
    assert safe("x" * 250) == "x" * 200 + "...(+50 chars)"
    assert safe("abc", limit=2) == "ab...(+1 chars)"
    assert safe(ValueError("a\nb")) == "a\\nb"


def test_every_argument_kind_is_escaped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "layersync")
    log = RateLimitedLog()
    log.warn("a", "%r went wrong", ValueError("x\ny"))
    log.warn("b", "%s went wrong", ValueError("x\ny"))
    log.warn("c", "%d held, %s", 3, b"bytes\n")
    log.warn("d", f"built by an f-string {FORGED}")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:3] == ["ValueError('x\\ny') went wrong", "x\\ny went wrong", "3 held, b'bytes\\n'"]
    assert all("\n" not in m for m in messages)


# -- what the library says, and where -------------------------------------------------------------
def _stderr_of(script: str) -> str:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


_REFUSED = """
from layersync_middleware import LayerSync
def client(**kw):
    return LayerSync(site_id="s", secret_key="sk_x", sender="sync", api_url="http://127.0.0.1:9", **kw)
"""


def test_nothing_is_printed_when_the_app_configured_no_logging() -> None:
    # Python's last-resort handler would print WARNINGs to stderr; a NullHandler keeps quiet.
    assert _stderr_of(_REFUSED + 'client().track("lead", event_id="no")') == ""


def test_console_log_prints_once_and_only_its_own_clients_lines() -> None:
    err = _stderr_of(_REFUSED + 'client(console_log=True).track("lead", event_id="no")\nclient().track("x y")')
    assert err.count("[LayerSync] WARNING event_id must be") == 1
    assert "event name must be" not in err  # the other client's line: not this option's business
    # The app configured logging: the line reaches its handler, once, not twice.
    err = _stderr_of(
        "import logging\nlogging.basicConfig(format='APP %(message)s')\n"
        + _REFUSED
        + 'client(console_log=True).track("lead", event_id="no")'
    )
    assert err.count("event_id must be") == 1 and "APP event_id must be" in err


def test_an_outage_is_logged_when_it_starts_and_ends(hub: Any, caplog: pytest.LogCaptureFixture) -> None:
    from helpers import settings

    from layersync_middleware import LayerSync

    caplog.set_level(logging.INFO, "layersync")
    hub.faults(mode="500")
    client = LayerSync(settings(api_url=hub.url, sender="sync", max_retries=0))
    client.track("lead")  # fails: the outage starts
    client.track("purchase")  # waits for the next probe: no request of its own
    assert client.flush(1) == 2  # each tried once more: failed again
    hub.faults(mode=None)
    assert client.flush(5) == 0
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "layersync"]
    starts = [m for level, m in messages if level == "WARNING" and "not taking events (HTTP 500)" in m]
    assert len(starts) == 1
    assert any(level == "INFO" and "failed again (HTTP 500)" in m for level, m in messages)
    assert any(level == "WARNING" and "takes events again" in m for level, m in messages)
    client.shutdown(0)


def test_a_console_logger_writes_to_stderr_only_while_the_app_has_no_logging(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from layersync_middleware._log import client_logger, logger

    assert client_logger(console=False) is logger  # the default: no handler of ours
    console = client_logger(console=True)
    assert console.name.startswith("layersync.console.")  # its lines reach the app through layersync too
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # an app that configured no logging
    console.warning("the hub refused %s", "a batch")
    assert capsys.readouterr().err == "[LayerSync] WARNING the hub refused a batch\n"
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])  # it has: the line goes there only
    console.warning("the hub refused %s", "a batch")
    assert capsys.readouterr().err == ""
