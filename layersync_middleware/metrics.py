"""Metrics for Prometheus and OpenTelemetry: what to serve, and gunicorn's hook.

With ``metrics="prometheus"`` (``LAYERSYNC_METRICS``), serve :func:`render` on a route of
your app; under gunicorn with several workers, set ``PROMETHEUS_MULTIPROC_DIR`` and call
:func:`child_exit` from gunicorn's ``child_exit`` hook. With ``metrics="otel"`` the figures
go to the OpenTelemetry meter provider your app set up. The instruments and how they mirror
``stats()``: :mod:`layersync_middleware._delivery.metrics`.
"""

from __future__ import annotations

from ._delivery.metrics import (
    COUNTERS,
    FAILED,
    GAUGES,
    HISTOGRAMS,
    STATUS_CLASSES,
    child_exit,
    otel_name,
    prometheus_name,
    registry,
    render,
)

__all__ = [
    "COUNTERS",
    "FAILED",
    "GAUGES",
    "HISTOGRAMS",
    "STATUS_CLASSES",
    "child_exit",
    "otel_name",
    "prometheus_name",
    "registry",
    "render",
]
