"""The processes of a run: the counting sink and the servers under test, each pinned to a core."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
from variants import Server

BENCH = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 60.0


def pin(core: int | None) -> list[str]:
    """The ``taskset`` prefix that runs a command on one core (none when not pinning)."""
    return [] if core is None else ["taskset", "-c", str(core)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM (graceful: uvicorn runs lifespan shutdown, gunicorn stops its workers), then SIGKILL."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Sink:
    """``sink.py`` in a subprocess; counters read over HTTP."""

    def __init__(self, core: int | None) -> None:
        self.proc = subprocess.Popen(
            [*pin(core), sys.executable, str(BENCH / "sink.py")],
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening "):
            stop(self.proc)
            raise RuntimeError(f"the sink did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        self._http = httpx.Client(base_url=self.url, timeout=10)

    def count(self) -> dict[str, int]:
        counts: dict[str, int] = self._http.get("/_count").json()
        return counts

    def reset(self) -> None:
        self._http.post("/_reset")

    def settle(self, *, expect: int = 0, quiet: float = 0.3, limit: float = 15.0) -> dict[str, int]:
        """Wait until the counters stop moving (and reach ``expect`` events, if given)."""
        deadline = time.monotonic() + limit
        last, since = self.count(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = self.count()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet and now["unique_events"] >= expect:
                break
        return last

    def close(self) -> None:
        self._http.close()
        stop(self.proc)


class Blackhole:
    """A hub that hangs: the kernel completes connections into the backlog, nobody accepts them."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(4096)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def close(self) -> None:
        self._socket.close()


def down_url() -> str:
    """A loopback port nothing listens on: connections are refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def server_command(server: Server, port: int) -> list[str]:
    if server.kind == "uvicorn":
        return [sys.executable, str(BENCH / "serve.py"), str(port)]
    worker = ["-k", "sync"] if server.kind == "gunicorn-sync" else ["-k", "gthread", "--threads", "4"]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "apps:wsgi_app()",
        "--pythonpath",
        str(BENCH),
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",  # one worker: the server has one core
        *worker,
        "--backlog",
        "1024",
        "--log-level",
        "warning",
    ]


class ServerProcess:
    def __init__(self, server: Server, hub_url: str, core: int | None, log: IO[str]) -> None:
        self.server = server
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "BENCH_APP": server.app, "BENCH_SINK": hub_url, "PYTHONPATH": str(BENCH)}
        env.pop("LAYERSYNC_CONSOLE_LOG", None)
        self.proc = subprocess.Popen(
            [*pin(core), *server_command(server, port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server.key} exited with {self.proc.returncode}: see the server log")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.server.key} did not answer within {STARTUP_TIMEOUT:.0f} s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def start_servers(
    servers: list[Server], hubs: dict[str, str], core: int | None, log: IO[str]
) -> dict[str, ServerProcess]:
    """Start every server at once (they idle between their runs), then wait for all.
    ``hubs`` maps each ``Server.hub`` to the URL its events go to."""
    started: dict[str, ServerProcess] = {}
    try:
        for server in servers:
            started[server.key] = ServerProcess(server, hubs[server.hub], core, log)
        for proc in started.values():
            proc.wait_ready()
    except BaseException:
        for proc in started.values():
            proc.stop()
        raise
    return started
