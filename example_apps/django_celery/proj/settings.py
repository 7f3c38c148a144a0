"""A Django project as Celery's guide and LayerSync's README make it.

The broker is a Django setting (``CELERY_BROKER_URL`` read through the ``CELERY``
namespace) and LayerSync's credentials are in ``LAYERSYNC``: the web process and the
worker (which runs Django with these very settings) read the same. Here both come from
``SHOP_*`` variables so that the example runs anywhere; yours may be literals.
"""

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "proj.urls"
USE_TZ = True
INSTALLED_APPS = ["layersync_middleware.django"]  # its system checks, and its Celery task
MIDDLEWARE = ["layersync_middleware.django.LayerSyncMiddleware"]

CELERY_BROKER_URL = os.environ.get("SHOP_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker killed mid-task gives its message back within a minute, not Redis' default hour.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 60}

LAYERSYNC = {
    "matcher": ["/api/cart/*"],
    "sender": "celery",
    "site_id": os.environ.get("SHOP_SITE_ID", ""),
    "secret_key": os.environ.get("SHOP_SECRET", ""),
    "api_url": os.environ.get("SHOP_HUB_URL", "https://api.layersync.com"),
}
