"""Flask extension: settings from ``app.config["LAYERSYNC_*"]``, then the environment.

ls = FlaskLayerSync(app)        # or: ls = FlaskLayerSync(); ls.init_app(app)
ls.client.track_with_identity("purchase", {...}, {...}, request=flask.request)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from ._client import LayerSync, shared_client
from ._pairing import Consent, IsSuccess
from ._settings import Settings, env_field, env_name
from .wsgi import LayerSyncWSGIMiddleware

PREFIX = "LAYERSYNC_"
_HOOK_KEYS = {"LAYERSYNC_CONSENT": "consent", "LAYERSYNC_IS_SUCCESS": "is_success"}


def settings_from_config(config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from a Flask config, then the environment. Errors name the key as
    ``app.config["LAYERSYNC_..."]``; unknown ``LAYERSYNC_*`` keys are refused."""
    options: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key.startswith(PREFIX) or key in _HOOK_KEYS:
            continue
        field = env_field(key) or key[len(PREFIX) :].lower()
        options[field], spelled[field] = value, key

    def spell(field: str) -> str:
        return f'app.config["{spelled.get(field) or env_name(field)}"]'

    return Settings.from_mapping(options, spell=spell, environ=environ)


class FlaskLayerSync:
    """Wraps ``app.wsgi_app`` with :class:`LayerSyncWSGIMiddleware`; ``.client`` tracks."""

    def __init__(
        self,
        app: Flask | None = None,
        *,
        consent: Consent | None = None,
        is_success: IsSuccess | None = None,
    ) -> None:
        self._consent = consent
        self._is_success = is_success
        self._client: LayerSync | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = settings_from_config(app.config)
        client = shared_client(settings)
        app.wsgi_app = LayerSyncWSGIMiddleware(  # type: ignore[method-assign]
            app.wsgi_app,
            client=client,
            consent=self._consent or app.config.get("LAYERSYNC_CONSENT"),
            is_success=self._is_success or app.config.get("LAYERSYNC_IS_SUCCESS"),
        )
        app.extensions["layersync"] = client
        self._client = client

    @property
    def client(self) -> LayerSync:
        if self._client is None:
            raise RuntimeError("FlaskLayerSync.init_app(app) has not been called")
        return self._client
