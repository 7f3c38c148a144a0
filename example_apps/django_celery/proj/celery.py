"""Celery's "First steps with Django" ``proj/celery.py``, unchanged.

``autodiscover_tasks()`` registers LayerSync's ``deliver`` task, because
``layersync_middleware.django`` is in ``INSTALLED_APPS`` (it ships a ``tasks`` module),
and the task goes to the default queue: the guide's worker needs no extra flag::

    celery -A proj worker -l INFO
"""

import os

from celery import Celery  # type: ignore[import-untyped]  # Celery ships no types

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
