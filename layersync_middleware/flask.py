"""Flask extension: settings from ``app.config["LAYERSYNC_*"]``, then the environment.

ls = FlaskLayerSync(app)        # or, with an app factory: ls = FlaskLayerSync(); ls.init_app(app)
ls.client.track_with_identity("purchase", {...}, {...}, request=flask.request)

Each app keeps its own client in ``app.extensions["layersync"]``; ``ls.client`` is the
one of ``current_app``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, has_app_context

from ._client import LayerSync
from ._clients import shared_client
from ._pairing import Consent, IsSuccess
from ._settings import Settings, env_field, env_name, settings_or_disabled
from .wsgi import LayerSyncWSGIMiddleware

PREFIX = "LAYERSYNC_"
EXTENSION = "layersync"
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
    """Wraps ``app.wsgi_app`` with :class:`LayerSyncWSGIMiddleware`; ``.client`` tracks.

    Missing credentials do not stop the app: tracking is disabled with one error log
    naming the key to set. Invalid settings raise from ``init_app``, at start-up
    (``LAYERSYNC_STRICT = True`` makes missing credentials raise too).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        consent: Consent | None = None,
        is_success: IsSuccess | None = None,
    ) -> None:
        self._consent = consent
        self._is_success = is_success
        # For use outside an app context, when exactly one app was initialised.
        self._only_client: LayerSync | None = None
        self._apps = 0
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = settings_or_disabled(lambda: settings_from_config(app.config), raise_invalid=True)
        client = shared_client(settings)
        if settings.enabled:
            app.wsgi_app = LayerSyncWSGIMiddleware(  # type: ignore[method-assign]
                app.wsgi_app,
                client=client,
                consent=self._consent or app.config.get("LAYERSYNC_CONSENT"),
                is_success=self._is_success or app.config.get("LAYERSYNC_IS_SUCCESS"),
            )
        app.extensions[EXTENSION] = client
        self._apps += 1
        self._only_client = client if self._apps == 1 else None

    @property
    def client(self) -> LayerSync:
        """The client of ``current_app`` (or of the only app, outside an app context)."""
        if has_app_context():
            client = current_app.extensions.get(EXTENSION)
            if isinstance(client, LayerSync):
                return client
            raise RuntimeError("FlaskLayerSync.init_app(app) has not been called for the current app")
        if self._only_client is not None:
            return self._only_client
        if self._apps == 0:
            raise RuntimeError("FlaskLayerSync.init_app(app) has not been called")
        raise RuntimeError("several apps use this FlaskLayerSync: use .client inside an app context")
