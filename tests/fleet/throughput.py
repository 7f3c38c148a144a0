"""How many events per second one Celery worker process delivers (the README's figure).

    .venv/bin/python tests/fleet/throughput.py [--events 20000] [--batch 50] [--concurrency 1]

Loads the broker (a fresh redis-server) with ``deliver`` tasks of ``--batch`` events each,
made by the hand-off itself, then starts ``celery -A example_apps.celery_app worker`` with
``--concurrency`` prefork children against a counting sink (``bench/sink.py``, a separate
process answering 200 at once), and times the deliveries from the first event counted to
the last. A measurement, not a test: the tests assert behaviour, never speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from celery import Celery  # type: ignore[import-untyped]  # noqa: E402
from helpers import SECRET, SITE, settings  # noqa: E402

from fleet.processes import celery_worker  # noqa: E402
from fleet.redis_server import RedisServer  # noqa: E402
from layersync_middleware._event import build_event, encode_event, new_event_id  # noqa: E402
from layersync_middleware.celery import HandoffTransport  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--loglevel", default="info")
    args = parser.parse_args()
    sink = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "sink.py"), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    assert sink.stdout is not None
    sink_url = f"http://127.0.0.1:{sink.stdout.readline().split()[1]}"
    try:
        with RedisServer() as broker:
            handoff = HandoffTransport(settings(), Celery(broker=broker.url, set_as_current=False))
            for start in range(0, args.events, args.batch):
                events = [
                    build_event(
                        site_id=SITE.site_id,
                        event_name="add_to_cart",
                        event_id=new_event_id("add_to_cart"),
                        props={"value": 79.5, "currency": "USD", "items": [{"item_id": "SKU-A", "price": 79.5}]},
                        user_data={"client_ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (bench)"},
                        event_source_url="https://shop.example/cart",
                    )
                    for _ in range(min(args.batch, args.events - start))
                ]
                assert {o.action for o in handoff.send(events, [encode_event(e) for e in events], 5)} == {"ok"}
            handoff.close()
            env = {
                "CELERY_BROKER_URL": broker.url,
                "LAYERSYNC_SITE_ID": SITE.site_id,
                "LAYERSYNC_SECRET": SECRET,
                "LAYERSYNC_API_URL": sink_url,
            }
            worker = celery_worker(env, concurrency=args.concurrency, loglevel=args.loglevel)
            try:
                first = last = 0.0
                count = 0
                while count < args.events:
                    count = json.loads(httpx.get(sink_url + "/_count").content)["events"]
                    now = time.monotonic()
                    if count and not first:
                        first, first_count = now, count
                    last = now
                    time.sleep(0.02)  # sampling: the times of the first and last arrival are the measurement
            finally:
                worker.stop()
        rate = (count - first_count) / (last - first)
        print(
            f"{args.events} events, tasks of {args.batch}, {args.concurrency} process(es), -l {args.loglevel}: "
            f"{rate:,.0f} events/s ({rate / args.batch:,.0f} tasks/s)"
        )
    finally:
        sink.terminate()
        sink.wait()


if __name__ == "__main__":
    main()
