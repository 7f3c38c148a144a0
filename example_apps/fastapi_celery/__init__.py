"""A FastAPI shop whose LayerSync events go through Celery, the broker given in code.

    uvicorn example_apps.fastapi_celery.web:app        # the web process
    celery -A example_apps.fastapi_celery worker       # finds .celery:app, consumes the default queue

Both read ``LAYERSYNC_SITE_ID``, ``LAYERSYNC_SECRET`` and ``LAYERSYNC_API_URL``; no
``CELERY_BROKER_URL`` is needed (if set, Celery lets it override ``broker=``).
"""
