"""A small LayerSync-compatible hub: the demo's and the tests' server, and a local
"test events" screen for developers (``layersync hub``). Needs the ``hub`` extra."""

from __future__ import annotations

from .app import Faults, HubSite, create_hub
from .server import HubServer
from .store import Store

__all__ = ["Faults", "HubServer", "HubSite", "Store", "create_hub"]
