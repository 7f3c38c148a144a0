"""gunicorn settings for several workers, as the README's Metrics section writes them."""

from layersync_middleware.metrics import child_exit  # noqa: F401  (gunicorn calls it when a worker exits)
