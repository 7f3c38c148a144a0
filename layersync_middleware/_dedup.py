"""Fleet-wide pairing memory in Redis (``dedup_url``). Being written: see issue 13."""

from __future__ import annotations

from ._settings import Settings
from ._transport import Transport


def claiming_transport(transport: Transport, settings: Settings) -> Transport:
    raise NotImplementedError("dedup_url is not implemented yet")
