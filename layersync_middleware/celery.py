"""Delivery through Celery (``sender="celery"``). Being written: see issue 13."""

from __future__ import annotations

from ._settings import Settings
from ._transport import Transport


def handoff_transport(settings: Settings) -> Transport:
    raise NotImplementedError("sender='celery' is not implemented yet")
