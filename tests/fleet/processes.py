"""A Celery worker and web servers as real processes, with their output kept for asserts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # example_apps.*, fleet.*


class Process:
    """A subprocess whose output goes to a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self._out = tempfile.TemporaryFile()  # noqa: SIM115  (closed by stop())
        self._final = ""  # the output, once the file is closed
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": PYTHONPATH, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if self._out.closed:
            return self._final
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not seen; output:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> str:
        """SIGTERM (a deploy's stop: Celery's warm shutdown), then SIGKILL if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self._out.closed:
            self._final = self.output()
            self._out.close()
        return self._final

    def kill(self) -> None:
        """SIGKILL the process and its group's stragglers (forked children)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def celery_worker(
    env: dict[str, str], *, concurrency: int = 2, queue: str = "layersync", loglevel: str = "info"
) -> Process:
    """``celery -A example_apps.celery_app worker -Q layersync``, prefork, ready to consume."""
    args = [sys.executable, "-m", "celery", "-A", "example_apps.celery_app", "worker", "-Q", queue]
    args += ["-c", str(concurrency), "-P", "prefork", "-l", loglevel, "-n", f"fleet-{os.getpid()}@%h"]
    args += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    worker = Process(args, env)
    try:
        # "ready." is an INFO line; the banner, printed at any level, comes just before it.
        worker.wait_for_output(" ready." if loglevel.lower() in ("info", "debug") else "[queues]", 60)
    except BaseException:
        worker.stop()
        raise
    return worker


def web_command(server: str, target: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning"]
    # Two workers forked from a master that imported the app first.
    gunicorn = [sys.executable, "-m", "gunicorn", target, "-b", f"127.0.0.1:{port}", "-w", "2", "--preload"]
    return [*gunicorn, "--graceful-timeout", "5", "--log-level", "warning"]


@contextmanager
def web_server(server: str, target: str, env: dict[str, str], port: int) -> Iterator[Process]:
    """``server`` (uvicorn, or gunicorn with two workers) serving ``target`` on ``port``."""
    web = Process(web_command(server, target, port), env)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", web.proc, f"{server} {target}", web.output)
        yield web
    finally:
        web.stop()
