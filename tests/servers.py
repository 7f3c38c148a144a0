"""Run an example app under a real server (uvicorn, hypercorn, daphne, granian, gunicorn,
uWSGI) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def command(server: str, target: str, port: int, workers: int = 2) -> list[str]:
    """How to run ``target`` under ``server``; ``workers`` for gunicorn and uWSGI."""
    host = f"127.0.0.1:{port}"
    gunicorn = [
        sys.executable,
        "-m",
        "gunicorn",
        target,
        "-b",
        host,
        "--graceful-timeout",
        "5",
        "--log-level",
        "warning",
    ]
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning"]
    if server == "hypercorn":  # serves from a spawned worker process
        return [sys.executable, "-m", "hypercorn", target, "--bind", host, "--log-level", "warning"]
    if server == "daphne":  # Twisted; sends no lifespan events
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", target]
    if server == "granian":  # a Rust server running the app in a spawned worker process
        interface = ["--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return [sys.executable, "-m", "granian", *interface, target]
    if server == "gunicorn":  # workers forked from a master that imported the app first
        return [*gunicorn, "-w", str(workers), "--preload"]
    if server == "gunicorn-gthread":
        return [*gunicorn, "-w", "1", "--threads", "4", "-k", "gthread"]
    if server == "uwsgi":  # forks after loading the app, without Python's fork hooks
        uwsgi = str(Path(sys.executable).parent / "uwsgi")
        options = f"--master --processes {workers} --enable-threads --need-app --disable-logging".split()
        # SIGTERM stops gracefully: each worker finishes its request and exits (and drains);
        # --die-on-term would kill the workers with SIGINT in the middle of a request.
        graceful = ["--hook-master-start", "unix_signal:15 gracefully_kill_them_all"]
        return [uwsgi, "--http-socket", host, "--module", target, "--chdir", str(ROOT), *options, *graceful]
    raise ValueError(server)


@contextmanager
def serve(server: str, target: str, env: dict[str, str]) -> Iterator[str]:
    with launch(server, target, env) as (_, url):
        yield url


@contextmanager
def launch(
    server: str, target: str, env: dict[str, str], workers: int = 2
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """The server process, serving, and its URL; stopped with SIGTERM when left (if it still runs)."""
    port = free_port()
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    proc = subprocess.Popen(
        command(server, target, port, workers),
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, proc, f"{server} {target}")
        yield proc, url
    finally:
        stop(proc)


def wait_until_serving(
    url: str, proc: subprocess.Popen[Any], what: str, output: Callable[[], str] | None = None, timeout: float = 30
) -> None:
    """Until ``url + "/"`` answers 200; raises with the server's output (``output()``, or
    its stdout) if it exits or never does."""

    def said() -> str:
        if output is not None:
            return output()
        return proc.stdout.read() if proc.stdout and proc.poll() is not None else ""

    def serving() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{said()}")
        try:
            return httpx.get(url + "/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(serving, f"{what} to serve", timeout)
    except AssertionError:
        raise RuntimeError(f"{what} did not start:\n{said()}") from None


def stop(proc: subprocess.Popen[str]) -> str:
    """Stop gracefully (SIGTERM, as a deploy does) and return what the server printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is None or proc.stdout.closed:  # read already
        return ""
    with proc.stdout:
        return proc.stdout.read()
