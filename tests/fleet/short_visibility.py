"""The FastAPI example's Celery app with a 2-second Redis visibility timeout: the messages a
killed worker held come back to the other workers after 2 seconds instead of an hour."""

from __future__ import annotations

from example_apps.fastapi_celery.celery import app

app.conf.broker_transport_options = {"visibility_timeout": 2}

__all__ = ["app"]
