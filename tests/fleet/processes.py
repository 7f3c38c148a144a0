"""A Celery worker and web servers as real processes, with their output kept for asserts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from helpers import wait_for
from servers import wait_until_serving

ROOT = Path(__file__).resolve().parents[2]
PYTHONPATH = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # example_apps.*, fleet.*


class Process:
    """A subprocess whose output goes to a file (a pipe nobody reads would fill and block it)."""

    def __init__(self, args: list[str], env: Mapping[str, str | None], cwd: Path = ROOT) -> None:
        self._out = tempfile.TemporaryFile()  # noqa: SIM115  (closed by stop())
        self._final = ""  # the output, once the file is closed
        # A None value removes the variable (CELERY_BROKER_URL must not leak into a case without it).
        merged = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), PYTHONPATH]), **env}
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env={k: v for k, v in merged.items() if v is not None},
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_all() reaches forked children
        )

    def output(self) -> str:
        if self._out.closed:
            return self._final
        self._out.seek(0)
        return self._out.read().decode(errors="replace")

    def wait_for_output(self, text: str, timeout: float) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited before {text!r}; output:\n{self.output()[-3000:]}")
            return text in self.output()

        try:
            wait_for(seen, repr(text), timeout)
        except AssertionError:
            raise RuntimeError(f"{text!r} not seen; output:\n{self.output()[-3000:]}") from None

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

    def kill_all(self) -> None:
        """SIGKILL the process and every child it forked: a lost host, as the broker sees it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the process and its group's stragglers (forked children)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def celery_worker(
    env: Mapping[str, str | None],
    *,
    app: str = "example_apps.celery_app",
    cwd: Path = ROOT,
    concurrency: int | None = 2,
    loglevel: str = "info",
    extra: Sequence[str] = ("--without-gossip", "--without-mingle", "--without-heartbeat"),
) -> Process:
    """``celery -A app worker``, prefork, ready to consume. With ``concurrency=None`` and
    ``extra=()`` it is the command line a user types: ``celery -A proj worker -l info``."""
    args = [sys.executable, "-m", "celery", "-A", app, "worker", "-l", loglevel, *extra]
    if concurrency is not None:
        args += ["-c", str(concurrency)]
    worker = Process(args, env, cwd)
    try:
        # "ready." is an INFO line; the banner, printed at any level, comes just before it.
        worker.wait_for_output(" ready." if loglevel.lower() in ("info", "debug") else "[queues]", 60)
    except BaseException:
        worker.stop()
        raise
    return worker


def web_command(server: str, target: str, port: int, workers: int = 2) -> list[str]:
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--log-level", "warning"]
    # Workers forked from a master that imported the app first.
    gunicorn = [sys.executable, "-m", "gunicorn", target, "-b", f"127.0.0.1:{port}", "-w", str(workers), "--preload"]
    return [*gunicorn, "--graceful-timeout", "5", "--log-level", "warning"]


@contextmanager
def web_server(
    server: str, target: str, env: Mapping[str, str | None], port: int, *, cwd: Path = ROOT, workers: int = 2
) -> Iterator[Process]:
    """``server`` (uvicorn, or gunicorn with ``workers`` workers) serving ``target`` on ``port``."""
    web = Process(web_command(server, target, port, workers), env, cwd)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", web.proc, f"{server} {target}", web.output)
        yield web
    finally:
        web.stop()


def run(args: list[str], env: Mapping[str, str | None], cwd: Path = ROOT, timeout: float = 60) -> str:
    """Run a command to its end; its output (stdout and stderr)."""
    process = Process(args, env, cwd)
    try:
        process.proc.wait(timeout)
    finally:
        output = process.stop()
    return output
