"""The hand-off to the broker (``sender="celery"``), as far as it shows without one: the
``celery_app`` setting is checked when the client is made, and its errors name it. The
hand-off itself, with real brokers and workers: tests/test_celery.py."""

from __future__ import annotations

import pytest
from helpers import settings

from layersync_middleware import ConfigurationError, LayerSync


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("no_such_module:app", "cannot import 'no_such_module:app': No module named 'no_such_module'"),
        ("json.nothing", "cannot import 'json.nothing': module 'json' has no attribute 'nothing'"),
        ("json:dumps", "'json:dumps' is not a Celery app"),
        ("json.dumps", "'json.dumps' is not a Celery app"),  # the dotted spelling works as well
    ],
)
def test_a_celery_app_that_is_not_one_is_named_when_the_client_is_made(path: str, said: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LayerSync(settings(sender="celery", celery_app=path))
    assert str(info.value) == f"celery_app: {said}"


def test_the_celery_app_setting_finds_the_app_by_either_spelling() -> None:
    for path in ("fleet.memory_celery:app", "fleet.memory_celery.app"):
        client = LayerSync(settings(sender="celery", celery_app=path))  # no error: it is a Celery app
        assert client.settings.celery_app == path
        client.shutdown(0)
