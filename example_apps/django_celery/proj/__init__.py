# As in Celery's "First steps with Django": the Celery app is loaded when Django starts,
# so that the web process (and LayerSync's hand-off) publish with it.
from .celery import app as celery_app

__all__ = ("celery_app",)
