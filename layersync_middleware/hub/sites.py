"""The sites a hub knows, and the demo site: the one place the demo credentials live.

Framework-free, so that an example app can import :data:`DEMO_SITE` without the
``hub`` extra (``from layersync_middleware.hub.sites import DEMO_SITE``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HubSite:
    site_id: str
    publishable_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"HubSite(site_id={self.site_id!r})"


# Public on purpose: `layersync hub` and the demo accept these, and print them.
DEMO_SITE = HubSite("site_demo", "pk_demo_publishable", "sk_demo_secret")

__all__ = ["DEMO_SITE", "HubSite"]
