from __future__ import annotations

import io
import logging

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
