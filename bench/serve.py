"""Serve ``apps.asgi_app()`` with uvicorn on 127.0.0.1:<port>, one process.

    BENCH_APP=layersync BENCH_SINK=http://127.0.0.1:9999 python bench/serve.py 8000 [--loop uvloop]

uvloop and httptools when installed (the production setup), asyncio and h11 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util

import uvicorn
from apps import asgi_app


def fastest(preferred: str, fallback: str) -> str:
    return preferred if importlib.util.find_spec(preferred) is not None else fallback


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    port = parser.parse_args().port
    uvicorn.run(
        asgi_app(),
        host="127.0.0.1",
        port=port,
        loop=fastest("uvloop", "asyncio"),
        http=fastest("httptools", "h11"),
        log_level="warning",
        access_log=False,
        backlog=1024,
    )


if __name__ == "__main__":
    main()
