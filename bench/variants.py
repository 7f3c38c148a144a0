"""What is measured: the servers (an app under a server kind) and the variants (a server
driven with one kind of request, compared with a baseline from the same round)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Server:
    kind: str  # "uvicorn", "gunicorn-sync" or "gunicorn-gthread"
    app: str  # a key of apps.ASGI_APPS (uvicorn) or apps.WSGI_APPS (gunicorn)
    requires: tuple[str, ...] = ()  # modules that must be importable
    hub: str = "sink"  # where events go: "sink" (counted), "down" (nothing listens), "hang" (never answers)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.app}:{self.hub}"


BASELINES = {"uvicorn": "asgi-bare", "gunicorn-sync": "wsgi-sync-bare", "gunicorn-gthread": "wsgi-gthread-bare"}


@dataclass(frozen=True)
class Variant:
    name: str
    server: Server
    label: str
    mode: str = "paired"  # what pairing.lua sends: "paired", "noheaders" or "unmatched"
    sends_events: bool = False  # every 2xx response must produce one event at the sink

    @property
    def baseline(self) -> str:
        """The variant this one's ratio is taken against, in the same round: its server's bare app."""
        return BASELINES[self.server.kind]


def _asgi(app: str, *requires: str, hub: str = "sink") -> Server:
    return Server("uvicorn", app, ("uvicorn", "starlette", *requires), hub)


def _sync(app: str, *requires: str) -> Server:
    return Server("gunicorn-sync", app, ("gunicorn", "flask", *requires))


def _gthread(app: str, *requires: str) -> Server:
    return Server("gunicorn-gthread", app, ("gunicorn", "flask", *requires))


_SENTRY = "sentry_sdk"
_OTEL_ASGI = ("opentelemetry.sdk", "opentelemetry.instrumentation.asgi")
_OTEL_WSGI = ("opentelemetry.sdk", "opentelemetry.instrumentation.wsgi")
_LS = "LayerSyncMiddleware"

VARIANTS: tuple[Variant, ...] = (
    Variant("asgi-bare", _asgi("bare"), "bare Starlette app"),
    Variant("asgi-reference", _asgi("reference"), "reference layer (issue 12), paired", sends_events=True),
    Variant("asgi-layersync", _asgi("layersync"), f"{_LS}, paired", sends_events=True),
    Variant("asgi-layersync-noheaders", _asgi("layersync"), f"{_LS}, matched, no pairing headers", mode="noheaders"),
    Variant("asgi-layersync-unmatched", _asgi("layersync"), f"{_LS}, unmatched path", mode="unmatched"),
    Variant("asgi-layersync-hub-down", _asgi("layersync", hub="down"), f"{_LS}, paired, hub down (refused)"),
    Variant("asgi-layersync-hub-hang", _asgi("layersync", hub="hang"), f"{_LS}, paired, hub hangs (never answers)"),
    Variant("asgi-sentry-tracing", _asgi("sentry-tracing", _SENTRY), "sentry-sdk, traces_sample_rate=1.0"),
    Variant("asgi-sentry-errors", _asgi("sentry-errors", _SENTRY), "sentry-sdk, errors only"),
    Variant("asgi-otel", _asgi("otel", *_OTEL_ASGI), "OpenTelemetry ASGI middleware"),
    Variant("wsgi-sync-bare", _sync("bare"), "bare Flask app"),
    Variant("wsgi-sync-layersync", _sync("layersync"), "LayerSyncWSGIMiddleware, paired", sends_events=True),
    Variant("wsgi-sync-otel", _sync("otel", *_OTEL_WSGI), "OpenTelemetry WSGI middleware"),
    Variant("wsgi-gthread-bare", _gthread("bare"), "bare Flask app"),
    Variant("wsgi-gthread-layersync", _gthread("layersync"), "LayerSyncWSGIMiddleware, paired", sends_events=True),
    Variant("wsgi-gthread-otel", _gthread("otel", *_OTEL_WSGI), "OpenTelemetry WSGI middleware"),
)


def missing_modules(server: Server) -> list[str]:
    missing = []
    for module in server.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(module)
    return missing


def select(names: list[str] | None) -> tuple[list[Variant], dict[str, str]]:
    """The variants to run (baselines added when missing) and why others were skipped."""
    by_name = {v.name: v for v in VARIANTS}
    unknown = sorted(set(names or ()) - by_name.keys())
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    wanted = set(names) if names else set(by_name)
    wanted |= {by_name[n].baseline for n in wanted}
    chosen, skipped = [], {}
    for variant in VARIANTS:
        if variant.name not in wanted:
            continue
        missing = missing_modules(variant.server)
        if missing:
            skipped[variant.name] = f"not installed: {', '.join(missing)}"
        elif variant.baseline in skipped:
            skipped[variant.name] = f"its baseline {variant.baseline} is skipped"
        else:
            chosen.append(variant)
    return chosen, skipped
