"""The ``layersync`` command: ``hub``, ``demo``, ``send-test-event``, ``check``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ._settings import ConfigurationError, Settings


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "layersync"


def _fail(message: str, code: int = 2) -> int:
    print(f"layersync: {message}", file=sys.stderr)
    return code


def cmd_hub(args: argparse.Namespace) -> int:
    try:
        from .hub import Faults, HubSite, create_hub
    except ImportError:
        return _fail("the hub needs the 'hub' extra: pip install 'layersync-middleware[hub]'")
    import uvicorn

    database = args.db
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    faults = Faults(mode=args.fault, rate=args.fault_rate)
    app = create_hub([HubSite(args.site, args.publishable_key, args.secret_key)], database=database, faults=faults)
    print(f"LayerSync local hub on http://{args.host}:{args.port}  (site {args.site}, database {database})")
    print(
        f"point an app at it: LAYERSYNC_API_URL=http://{args.host}:{args.port} LAYERSYNC_SITE_ID={args.site} "
        "LAYERSYNC_SECRET=<the --secret-key>"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from ._demo import run_demo
    except ImportError:
        return _fail("the demo needs the 'hub' extra: pip install 'layersync-middleware[hub]'")
    return run_demo()


def _settings() -> Settings:
    return Settings.from_env()


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = _settings()
    except ConfigurationError as exc:
        return _fail(str(exc))
    print("settings OK")
    print(f"  site_id      {settings.site_id}")
    print("  secret_key   set (sk_...)" if settings.enabled else "  secret_key   -")
    print(f"  api_url      {settings.api_url}")
    print(f"  enabled      {settings.enabled}")
    print(f"  trust_proxy  {settings.trust_proxy}")
    print(f"  matcher      {', '.join(r.pattern for r in settings.matcher.rules) or '(none)'}")
    print(f"  sender       {settings.sender}, timeout {settings.timeout_ms} ms, {settings.max_retries} retries")
    return 0


def cmd_send_test_event(args: argparse.Namespace) -> int:
    from ._client import LayerSync

    try:
        client = LayerSync(_settings())
    except ConfigurationError as exc:
        return _fail(str(exc))
    if not client.settings.enabled:
        return _fail("LAYERSYNC_ENABLED is off")
    print(f"sending a {args.event} event to {client.settings.api_url} ...", flush=True)
    started = time.perf_counter()
    result = client.send(args.event, {"test_event": True})
    elapsed = (time.perf_counter() - started) * 1000
    client.shutdown(0)
    if result.ok:
        print(f"ok: HTTP {result.status} in {elapsed:.0f} ms, event_id {result.event_id}")
        return 0
    status = f"HTTP {result.status}" if result.status else "no response"
    return _fail(f"not delivered: {status} ({result.error}) after {elapsed:.0f} ms", 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layersync", description="LayerSync server-side tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    hub = sub.add_parser("hub", help="run the local LayerSync hub")
    hub.add_argument("--host", default="127.0.0.1")
    hub.add_argument("--port", type=int, default=8787)
    hub.add_argument("--db", default=str(_data_dir() / "hub.sqlite3"), help="SQLite file, or :memory:")
    hub.add_argument("--site", default="site_demo")
    hub.add_argument("--publishable-key", default="pk_demo_publishable")
    hub.add_argument("--secret-key", default="sk_demo_secret")
    hub.add_argument("--fault", choices=["500", "429", "hang", "drop"], help="inject a fault on server ingest")
    hub.add_argument("--fault-rate", type=float, default=1.0, help="share of requests hit by --fault")
    hub.set_defaults(func=cmd_hub)

    sub.add_parser("demo", help="run the hub, an example shop and a shopping session").set_defaults(func=cmd_demo)

    test = sub.add_parser("send-test-event", help="send one event with the LAYERSYNC_* settings")
    test.add_argument("--event", default="test_event")
    test.set_defaults(func=cmd_send_test_event)

    sub.add_parser("check", help="validate the LAYERSYNC_* settings").set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
