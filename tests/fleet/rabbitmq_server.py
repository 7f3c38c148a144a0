"""A throw-away RabbitMQ node on loopback ports, its files in a temporary directory (about
10 s to start on a busy CI machine)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from helpers import wait_for

from fleet.redis_server import free_port

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's /usr/sbin one switches to the rabbitmq user


def available() -> bool:
    return Path(SERVER).exists()


class RabbitMQServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self._dir = tempfile.mkdtemp(prefix="layersync-rabbitmq-")
        self._epmd = str(free_port())
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> RabbitMQServer:
        base = Path(self._dir)
        env = {
            **os.environ,
            "HOME": self._dir,
            "RABBITMQ_NODENAME": f"layersync{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": self._epmd,  # its own epmd: no clash with a system RabbitMQ
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "plugins"),
            "RABBITMQ_CONFIG_FILES": str(base / "conf.d"),
        }
        self._proc = subprocess.Popen(
            [SERVER], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        proc = self._proc

        def listening() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited (port {self.port})")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return True
            except OSError:
                return False

        try:
            wait_for(listening, f"rabbitmq-server on port {self.port}", timeout, interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # a throw-away node: nothing to keep
            proc.wait()
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        subprocess.run([epmd, "-port", self._epmd, "-kill"], capture_output=True, check=False)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RabbitMQServer:
        return self.start()

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.stop()
