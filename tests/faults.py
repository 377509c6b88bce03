"""Fault-injection tools for the reliability tests (RELIABILITY.md lists what each test shows).

* :class:`FaultProxy`: a loopback HTTP proxy in front of a STAC API that fails (any status,
  with ``Retry-After``), delays, truncates or resets a chosen share of requests (or the first
  N), rewrites the API's own URLs to its own so that every follow-up request (pagination) goes
  through it too, logs what it did, and stops itself after ``lifetime_s`` at the latest.
* :func:`break_cog`: delete, truncate or overwrite with random bytes a chosen COG.
* :func:`html_server`: a plain web server that answers every path with an HTML page.
* :class:`FileServer`: a loopback web server of a folder's files with byte ranges (as GDAL
  reads COGs) that counts the requests per path and can answer 503 to the first of each.
* :class:`FaultOnTask`: a Dask worker plugin that kills its worker process (SIGKILL), or makes
  it outgrow its memory limit, when a chosen task begins to execute, a bounded number of times
  over all workers and their restarts.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import os
import random
import signal
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distributed import WorkerPlugin


@dataclass(frozen=True)
class Faults:
    """What the proxy does to the requests it picks (and which it picks)."""

    #: Share of requests (0-1) that get the fault, drawn with ``seed``...
    share: float = 0.0
    #: ... or exactly the first N requests (of ``methods``), when set.
    first: int | None = None
    #: Only requests with these methods are candidates (None: all).
    methods: frozenset[str] | None = None
    #: Answer with this HTTP status instead of forwarding.
    status: int | None = None
    #: ``Retry-After`` header of that answer.
    retry_after: str | None = None
    #: Seconds to wait before answering (then forward normally).
    delay_s: float = 0.0
    #: Forward, but send only the first half of the body (a consistent Content-Length).
    truncate: bool = False
    #: Close the connection with a TCP reset instead of answering.
    reset: bool = False
    seed: int = 0


@dataclass
class Logged:
    """One request the proxy saw."""

    at: float
    method: str
    path: str
    fault: str


class FaultProxy:
    """A threaded loopback proxy that injects :class:`Faults`; use it as a context manager."""

    def __init__(self, upstream: str, faults: Faults, lifetime_s: float = 60.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults = faults
        self.log: list[Logged] = []
        self._rng = random.Random(faults.seed)
        self._lock = threading.Lock()
        self._candidates = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True
        self._stopped = False
        self._closed = threading.Event()

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving (idempotent; also called by the lifetime timer)."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self._closed.set()

    @property
    def stopped(self) -> bool:
        """True once the proxy no longer serves (its socket is closed)."""
        return self._closed.is_set()

    @property
    def faulted(self) -> list[Logged]:
        """The requests that got a fault."""
        return [entry for entry in self.log if entry.fault]

    def _pick(self, method: str) -> bool:
        f = self.faults
        if f.methods is not None and method not in f.methods:
            return False
        with self._lock:
            self._candidates += 1
            if f.first is not None:
                return self._candidates <= f.first
            return self._rng.random() < f.share

    def _handle(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        f = self.faults
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        picked = self._pick(handler.command)
        fault = ""
        if picked:
            fault = (
                "reset"
                if f.reset
                else f"status {f.status}"
                if f.status
                else "truncate"
                if f.truncate
                else f"delay {f.delay_s}s"
            )
        with self._lock:
            self.log.append(Logged(time.monotonic(), handler.command, handler.path, fault))
        with contextlib.suppress(OSError):  # a client that gave up (timeout) closed its end
            if picked and f.reset:
                handler.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                handler.close_connection = True
                handler.connection.close()
                return
            if picked and f.status:
                self._answer(handler, f.status, b"<html>injected fault</html>", "text/html")
                return
            if picked and f.delay_s:
                time.sleep(f.delay_s)
            status, ctype, data = self._forward(handler, body)
            if picked and f.truncate:
                data = data[: len(data) // 2]
            self._answer(handler, status, data, ctype)

    def _answer(
        self, handler: http.server.BaseHTTPRequestHandler, status: int, data: bytes, ctype: str
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        if status in (429, 503) and self.faults.retry_after:
            handler.send_header("Retry-After", self.faults.retry_after)
        handler.end_headers()
        handler.wfile.write(data)

    def _forward(
        self, handler: http.server.BaseHTTPRequestHandler, body: bytes
    ) -> tuple[int, str, bytes]:
        parts = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("host",)}
        try:
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        # The API writes its own base URL into links; point them at the proxy instead.
        data = data.replace(self.upstream.encode(), self.url.encode())
        return resp.status, resp.getheader("Content-Type") or "application/json", data


@contextlib.contextmanager
def html_server(lifetime_s: float = 60.0) -> Iterator[str]:
    """A loopback web server that answers every GET with a small HTML page; yields its URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = b"<!DOCTYPE html><html><body><h1>Welcome</h1></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    timer = threading.Timer(lifetime_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()


@dataclass
class BrokenCog:
    """What :func:`break_cog` did."""

    path: Path
    how: str
    size_before: int = 0


def break_cog(path: Path, how: str, seed: int = 0) -> BrokenCog:
    """Break one COG in place: ``missing`` (deleted), ``truncated`` (cut to a third), or
    ``random`` (the same length of random bytes)."""
    size = path.stat().st_size
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(size // 3)
    elif how == "random":
        path.write_bytes(random.Random(seed).randbytes(size))
    else:
        raise ValueError(f"unknown way to break a COG: {how!r}")
    return BrokenCog(path, how, size)


def free_port_closed() -> str:
    """A loopback address where nothing listens (bound and closed at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


class FaultOnTask(WorkerPlugin):
    """A Dask worker plugin (``client.register_plugin``): when a task whose name (its key's
    first part) starts with ``prefix`` begins to execute on a worker, inject ``fault`` into
    that worker's process before the task's function runs, so the task dies unfinished.

    * ``kill``: SIGKILL at once (what an OOM killer or a lost node does); the nanny starts a
      new worker.
    * ``memory``: allocate (and touch) 64 MiB blocks until the process holds ``cap_bytes``, so
      the nanny's memory monitor stops the worker for passing its limit.

    At most ``times`` faults over all workers and their restarts (the scheduler hands the
    plugin to every new worker), all on the first task hit: one task that fails its worker
    every time it runs, as a task that needs more memory than the limit does. Each fault claims
    a file ``fault-N`` in ``folder`` holding the pid of the process and the task's key, so a
    test can tell what was hit.
    """

    def __init__(
        self, prefix: str, folder: Path, fault: str, times: int = 1, cap_bytes: int = 2**32
    ) -> None:
        if fault not in ("kill", "memory"):
            raise ValueError(f"unknown worker fault: {fault!r}")
        self.prefix, self.folder, self.fault = prefix, Path(folder), fault
        self.times, self.cap_bytes = times, cap_bytes

    def transition(self, key: object, start: str, finish: str, **kwargs: object) -> None:
        name = key[0] if isinstance(key, tuple) else key
        if finish != "executing" or not str(name).startswith(self.prefix):
            return
        if not self._claim(key):
            return
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        # In the worker's event loop, before the task's thread starts: the task stays
        # unfinished (and the worker unresponsive) until the nanny stops the process.
        _grow(self.cap_bytes)

    def _claim(self, key: object) -> bool:
        hits = self.claimed(self.folder)
        if hits and hits[0][1] != str(key):
            return False
        for n in range(self.times):
            try:
                fd = os.open(self.folder / f"fault-{n}", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                continue
            os.write(fd, f"{os.getpid()} {key}".encode())
            os.close(fd)
            return True
        return False

    @staticmethod
    def claimed(folder: Path) -> list[tuple[int, str]]:
        """``(pid, task key)`` of each fault injected so far."""
        hits = []
        for path in sorted(Path(folder).glob("fault-*")):
            pid, _, key = path.read_text().partition(" ")
            hits.append((int(pid), key))
        return hits


def _grow(cap_bytes: int) -> None:
    """Hold ever more memory, up to ``cap_bytes``, until the process is stopped."""
    # A bound for the case that nothing stops it (no memory limit): then the test fails on
    # its timeout, not the machine on its memory.
    held = []
    block = 64 * 2**20
    while len(held) * block < cap_bytes:
        held.append(bytearray(b"\x01") * block)  # written, so resident
        time.sleep(0.01)
    while True:
        time.sleep(1)


__all__ = [
    "BrokenCog",
    "FaultOnTask",
    "FaultProxy",
    "Faults",
    "break_cog",
    "free_port_closed",
    "html_server",
]
