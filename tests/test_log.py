from __future__ import annotations

import logging

import pytest

from layersync_middleware._log import RateLimitedLog


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
