"""The apps under test, built inside the server process from two environment variables.

``BENCH_APP`` names the app (see :data:`ASGI_APPS` and :data:`WSGI_APPS`) and
``BENCH_SINK`` is the counting sink's URL, where every variant that sends anything sends
it (LayerSync, the reference layer, Sentry). OpenTelemetry exports to a no-op exporter.
Each peer is configured the way its documentation's quick start shows.

    uvicorn:  python bench/serve.py <port>                        (imports asgi_app)
    gunicorn: gunicorn --pythonpath bench 'apps:wsgi_app()' ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

MATCHER = ["/api/cart/*", "/api/checkout/*", "/api/orders/**"]
SITE_ID = "site_bench"
SECRET = "sk_bench_0123456789"


def _sink() -> str:
    return os.environ["BENCH_SINK"]


def _layersync_env() -> None:
    os.environ.update(
        LAYERSYNC_SITE_ID=SITE_ID,
        LAYERSYNC_SECRET=SECRET,
        LAYERSYNC_API_URL=_sink(),
        LAYERSYNC_MATCHER=", ".join(MATCHER),
    )


# -- ASGI ----------------------------------------------------------------------------------
def starlette_app(middleware: Sequence[Any] = ()) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    async def add_to_cart(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "cart_items": 1})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    routes = [
        Route("/api/cart/add", add_to_cart, methods=["POST"]),
        Route("/products/{sku}", add_to_cart, methods=["POST"]),  # the unmatched path, same handler
        Route("/health", health),
    ]
    return Starlette(routes=routes, middleware=list(middleware))


def _asgi_bare() -> Any:
    return starlette_app()


def _asgi_reference() -> Any:
    from reference import ReferenceLayer, Shipper
    from starlette.middleware import Middleware

    shipper = Shipper(_sink(), SECRET, SITE_ID)
    return starlette_app([Middleware(ReferenceLayer, shipper=shipper)])


def _asgi_layersync() -> Any:
    from starlette.middleware import Middleware

    from layersync_middleware import LayerSyncMiddleware

    _layersync_env()  # the README's way: settings from the environment
    return starlette_app([Middleware(LayerSyncMiddleware)])


def _sentry_init(traces: bool) -> None:
    import sentry_sdk

    # The DSN's host is the sink: envelopes go to /api/1/envelope/ on loopback.
    dsn = _sink().replace("http://", "http://public@") + "/1"
    if traces:
        sentry_sdk.init(dsn=dsn, traces_sample_rate=1.0)  # Sentry's Starlette quick start
    else:
        sentry_sdk.init(dsn=dsn)  # errors only


def _asgi_sentry_tracing() -> Any:
    _sentry_init(traces=True)
    return starlette_app()  # sentry_sdk.init patches Starlette: no wrapper to add


def _asgi_sentry_errors() -> Any:
    _sentry_init(traces=False)
    return starlette_app()


def _otel_tracer_provider() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NoopExporter(SpanExporter):
        """Stands in for OTLP: spans are built, batched and handed over, then dropped."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
    trace.set_tracer_provider(provider)


def _asgi_otel() -> Any:
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    _otel_tracer_provider()
    return OpenTelemetryMiddleware(starlette_app())


ASGI_APPS: dict[str, Callable[[], Any]] = {
    "bare": _asgi_bare,
    "reference": _asgi_reference,
    "layersync": _asgi_layersync,
    "sentry-tracing": _asgi_sentry_tracing,
    "sentry-errors": _asgi_sentry_errors,
    "otel": _asgi_otel,
}


def asgi_app() -> Any:
    return ASGI_APPS[os.environ["BENCH_APP"]]()


# -- WSGI ----------------------------------------------------------------------------------
def flask_app() -> Any:
    from flask import Flask, jsonify

    app = Flask(__name__)  # not "bench": a namespace package spread over checkouts confuses its root lookup

    def add_to_cart(sku: str = "") -> Any:
        return jsonify(ok=True, cart_items=1)

    app.add_url_rule("/api/cart/add", "cart", add_to_cart, methods=["POST"])
    app.add_url_rule("/products/<sku>", "product", add_to_cart, methods=["POST"])
    app.add_url_rule("/health", "health", lambda: "ok")
    return app


def _wsgi_bare() -> Any:
    return flask_app()


def _wsgi_layersync() -> Any:
    from layersync_middleware import LayerSyncWSGIMiddleware

    _layersync_env()
    app = flask_app()
    app.wsgi_app = LayerSyncWSGIMiddleware(app.wsgi_app)
    return app


def _wsgi_otel() -> Any:
    from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

    _otel_tracer_provider()  # in the worker, after the fork, as OTel's gunicorn notes ask
    app = flask_app()
    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app)
    return app


WSGI_APPS: dict[str, Callable[[], Any]] = {
    "bare": _wsgi_bare,
    "layersync": _wsgi_layersync,
    "otel": _wsgi_otel,
}


def wsgi_app() -> Any:
    return WSGI_APPS[os.environ["BENCH_APP"]]()
