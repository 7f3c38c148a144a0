"""The ``layersync`` command (also ``python -m layersync_middleware``): ``hub``, ``demo``,
``send-test-event``, ``check``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import _wire
from ._match import Rule
from ._settings import ENV_NAMES, ConfigurationError, Settings
from ._version import __version__
from .hub.sites import DEMO_SITE

_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_OFF = ("0", "false", "no", "off")


def _data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "layersync"


def _fail(message: str, code: int = 2) -> int:
    print(f"layersync: {message}", file=sys.stderr)
    return code


def _say(message: str = "") -> None:
    print(message, flush=True)  # flushed: `layersync hub` runs until it is killed


# -- hub and demo ----------------------------------------------------------------------------
def cmd_hub(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .hub import Faults, HubSite, create_hub
    except ImportError:
        return _fail("the hub needs the 'hub' extra: pip install 'layersync-middleware[hub]'")
    try:
        faults = Faults(mode=args.fault, rate=args.fault_rate)
    except ValueError as exc:
        return _fail(f"--fault-rate: {exc}")
    database = args.db
    if database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    site = HubSite(args.site, args.publishable_key, args.secret_key)
    allowed = [*args.allow_host, *([] if args.host in _WILDCARD_HOSTS else [args.host])]
    try:
        app = create_hub(
            [site],
            database=database,
            faults=faults,
            allowed_hosts=allowed,
            allowed_peers=args.allow_peer,
            max_db_bytes=int(args.max_db_mb * 1024 * 1024),
        )
    except ValueError as exc:
        return _fail(f"--allow-peer: {str(exc).removeprefix('allowed_peers: ')}")
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}"
    # The demo secret is public (it is in the docs): showing it is the point. A key of
    # the user's own is not echoed.
    shown = site.secret_key if site.secret_key == DEMO_SITE.secret_key else None
    _say(f"LayerSync local hub on {url}  (database {database})")
    _say(f"  site id          {site.site_id}")
    _say(f"  publishable key  {site.publishable_key}   (browser pages)")
    _say(f"  secret key       {shown or '(the --secret-key you gave; not shown)'}   (servers)")
    _say("point an app at it:")
    secret = shown or "<your --secret-key>"
    _say(f"  LAYERSYNC_API_URL={url} LAYERSYNC_SITE_ID={site.site_id} LAYERSYNC_SECRET={secret}")
    peers = ", ".join(args.allow_peer) or "none"
    _say(f"the page: {url}/  (this machine only; also allowed: {peers}; events capped at {args.max_db_mb:g} MiB)")
    if faults.mode is not None:
        _say(f"injecting fault {faults.mode} on {faults.rate:.0%} of server ingest requests")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=1, http="h11")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .hub.demo import run_demo
    except ImportError:
        return _fail("the demo needs the 'hub' extra: pip install 'layersync-middleware[hub]'")
    interactive = not args.no_wait and sys.stdin.isatty()
    return run_demo(wait=_wait_for_enter if interactive else None)


def _wait_for_enter() -> None:
    try:
        input()
    except (EOFError, KeyboardInterrupt):
        pass


# -- settings --------------------------------------------------------------------------------
def _settings() -> Settings:
    """The ``LAYERSYNC_*`` settings; a ConfigurationError names the variable to fix."""
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        raise ConfigurationError(ENV_NAMES.get(exc.setting, exc.setting), exc.problem) from None
    if os.environ.get("LAYERSYNC_ENABLED", "").strip().lower() in _OFF:
        return settings
    # Required whatever Settings does without them (it may disable tracking instead).
    if not os.environ.get("LAYERSYNC_SITE_ID"):
        raise ConfigurationError("LAYERSYNC_SITE_ID", "is not set (the site id from your LayerSync dashboard)")
    if not (os.environ.get("LAYERSYNC_SECRET") or os.environ.get("LAYERSYNC_SECRET_KEY")):
        raise ConfigurationError("LAYERSYNC_SECRET", "is not set (the secret key 'sk_...' from your dashboard)")
    return settings


def describe_rule(rule: Rule) -> str:
    """``/api/orders -> purchase (the browser SDK's name for this URL)``: what the
    middleware accepts there, named as the SDK names it."""
    if rule.names is None:
        if "*" in rule.pattern or ":" in rule.pattern:
            # A pattern is not a URL: the SDK names each URL it matches on its own
            # (/api/checkout/start is begin_checkout, /api/checkout/complete purchase).
            return (
                f"{rule.pattern} -> the name the browser SDK stamps on each URL it matches (see its rules below; "
                f"to choose the names: {rule.pattern}=name)"
            )
        name = _wire.browser_event_name_for(rule.pattern)
        if name is None:
            return f"{rule.pattern} -> nothing: the browser SDK stamps no event here (to choose: {rule.pattern}=name)"
        return f"{rule.pattern} -> {name} (the browser SDK's name for this URL)"
    if "*" in rule.names:
        return f"{rule.pattern} -> any event name"
    return f"{rule.pattern} -> {', '.join(sorted(rule.names))}"


def cmd_check(args: argparse.Namespace) -> int:
    try:
        settings = _settings()
    except ConfigurationError as exc:
        return _fail(str(exc))
    print("settings OK")
    print(f"  site_id      {settings.site_id or '-'}")
    print("  secret_key   set (not shown)" if settings.secret_key.reveal() else "  secret_key   -")
    print(f"  api_url      {settings.api_url}")
    print(f"  enabled      {settings.enabled}")
    print(f"  trust_proxy  {settings.trust_proxy}")
    print(f"  sender       {settings.sender}, timeout {settings.timeout_ms} ms, {settings.max_retries} retries")
    matcher = settings.matcher
    rules = matcher.rules
    print(f"  matcher      {len(rules)} pattern(s), checked first; a pattern allows the names listed")
    for rule in rules:
        print(f"    {describe_rule(rule)}")
    if matcher.sdk:
        print("  sdk_rules    on: the browser SDK's rules pair what it stamps, on the URL as the browser sent it")
        print("               (query included), checked in this order; the first that matches names the event:")
        for regex, name in matcher.endpoints.describe():
            print(f"    {name:<15} {regex}")
    else:
        print("  sdk_rules    off: only the patterns above pair")
    if settings.pair_read_only:
        print("  read-only    GET, HEAD and OPTIONS requests pair too (pair_read_only)")
    else:
        print("  read-only    GET, HEAD and OPTIONS requests do not pair (LAYERSYNC_PAIR_READ_ONLY=1 to pair them)")
    if settings.sender == "celery" and settings.enabled:
        return celery_round_trip(settings, "test_event")
    return 0


def celery_round_trip(settings: Settings, event: str) -> int:
    """``sender="celery"``: a probe through the broker, a worker and the hub, each hop said."""
    try:
        from .celery import round_trip
    except ImportError:
        return _fail("sender=celery needs the 'celery' extra: pip install 'layersync-middleware[celery]'")
    print(f"round trip through Celery (a {event} event, sent to the hub by a worker) ...", flush=True)
    ok, lines = round_trip(settings, event, timeout=max(settings.timeout, 1.0))
    for line in lines:
        print(f"  {line}")
    if ok:
        print("ok: delivered through a worker")
        return 0
    return _fail("not delivered through Celery; see the lines above", 1)


# -- send-test-event -------------------------------------------------------------------------
def _hint(status: int | None, settings: Settings, timeout: float) -> str:
    """What to check, for the statuses a first setup meets."""
    if status is None:
        return f"nothing answered within {timeout:g} s: is the hub at LAYERSYNC_API_URL running? (`layersync hub`)"
    if status == 401:
        hint = (
            f"the hub refused the key: check LAYERSYNC_SECRET (the secret key 'sk_...' of site "
            f"{settings.site_id}, not the publishable one) and LAYERSYNC_SITE_ID ({settings.site_id})"
        )
        host = urlsplit(settings.api_url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            hint += (
                f"; `layersync hub` prints the ones it accepts (the demo's: LAYERSYNC_SITE_ID={DEMO_SITE.site_id} "
                f"LAYERSYNC_SECRET={DEMO_SITE.secret_key})"
            )
        return hint
    if status == 404:
        return "no ingest endpoint there: is LAYERSYNC_API_URL the hub's base URL?"
    return "the hub refused the event"


def cmd_send_test_event(args: argparse.Namespace) -> int:
    from ._client import LayerSync

    try:
        settings = _settings()
    except ConfigurationError as exc:
        return _fail(str(exc))
    if not settings.enabled:
        return _fail("LAYERSYNC_ENABLED is off")
    if settings.sender == "celery":
        return celery_round_trip(settings, args.event)
    timeout = settings.timeout_ms / 1000
    # One attempt, bounded by the timeout: a test answers now or says why.
    client = LayerSync(settings.replace(max_retries=0))
    print(f"sending a {args.event} event to {settings.api_url} (timeout {timeout:g} s) ...", flush=True)
    started = time.perf_counter()
    result = client.send(args.event, {"test_event": True}, timeout=timeout)
    elapsed = (time.perf_counter() - started) * 1000
    client.shutdown(0)
    if result.ok:
        print(f"ok: HTTP {result.status} in {elapsed:.0f} ms, event_id {result.event_id}")
        return 0
    status = f"HTTP {result.status}" if result.status else "no response"
    return _fail(
        f"not delivered: {status} ({result.error}) after {elapsed:.0f} ms; {_hint(result.status, settings, timeout)}",
        1,
    )


# -- the parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="layersync", description="LayerSync server-side tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    hub = sub.add_parser("hub", help="run the local LayerSync hub", formatter_class=formatter)
    hub.add_argument("--host", default="127.0.0.1", help="address to listen on; keep it on loopback")
    hub.add_argument("--port", type=int, default=8787, help="port to listen on")
    hub.add_argument("--db", default=str(_data_dir() / "hub.sqlite3"), help="SQLite file, or :memory:")
    hub.add_argument("--site", default=DEMO_SITE.site_id, help="the site id the hub accepts")
    hub.add_argument("--publishable-key", default=DEMO_SITE.publishable_key, help="the browser key it accepts")
    hub.add_argument("--secret-key", default=DEMO_SITE.secret_key, help="the server key it accepts")
    hub.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a host name besides loopback under which the page and /api/hub/* answer (repeatable)",
    )
    hub.add_argument(
        "--allow-peer",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="an address or network (172.16.0.0/12) besides loopback whose requests the page and /api/hub/* "
        "answer (repeatable); others get 403 even with --host 0.0.0.0",
    )
    hub.add_argument(
        "--max-db-mb", type=float, default=64, help="cap on stored events, in MiB; past it the oldest are evicted"
    )
    hub.add_argument(
        "--fault",
        choices=["500", "429", "hang", "drip", "reset", "drop"],
        help="inject a fault on server ingest (more options: POST /api/hub/faults)",
    )
    hub.add_argument("--fault-rate", type=float, default=1.0, help="share of requests hit by --fault, 0-1")
    hub.set_defaults(func=cmd_hub)

    demo = sub.add_parser("demo", help="run the hub, an example shop and a shopping session", formatter_class=formatter)
    demo.add_argument(
        "--no-wait", action="store_true", help="exit at once (at a terminal the hub stays up until Enter)"
    )
    demo.set_defaults(func=cmd_demo)

    test = sub.add_parser(
        "send-test-event",
        help="send one event with the LAYERSYNC_* settings",
        description="One attempt, within LAYERSYNC_TIMEOUT_MS.",
        formatter_class=formatter,
    )
    test.add_argument("--event", default="test_event", help="the event name")
    test.set_defaults(func=cmd_send_test_event)

    check = sub.add_parser(
        "check", help="validate the LAYERSYNC_* settings; exit 2 if they are wrong", formatter_class=formatter
    )
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
