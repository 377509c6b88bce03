"""A small HTTP server for COGs on loopback, for tests and benchmarks (not product code).

It serves the files of one folder with ``Range`` support (one range per request, as GDAL's
``/vsicurl/`` asks for them; a multi-range request is answered with the whole file, as a
server without multipart support would), answers ``HEAD``, waits ``latency_s`` before each
answer (a remote object store's first-byte latency), answers the first ``fail_first`` requests
for each path with 503 (a throttled store), and counts the requests and the bytes it sent, per
path. Tests that refuse requests by other rules (expired tokens) subclass :class:`RangeHandler`
and override :meth:`RangeHandler.refused`.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Traffic:
    """What the server answered: requests and bytes sent, per path; every request's line."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes_sent: Counter[str] = field(default_factory=Counter)
    #: Answers that served a file (200 or 206).
    served: int = 0
    #: ``(method, path, Range header or "")`` in the order they came.
    log: list[tuple[str, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def total_requests(self) -> int:
        return sum(self.requests.values())

    def total_bytes(self) -> int:
        return sum(self.bytes_sent.values())

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent.clear()
            self.log.clear()
            self.served = 0


class RangeServer(ThreadingHTTPServer):
    """The server of ``folder`` on a free loopback port; a context manager that serves from a
    thread while in the block (``url``, ``traffic``)."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        folder: Path,
        latency_s: float = 0.0,
        fail_first: int = 0,
        handler: type[RangeHandler] | None = None,
    ) -> None:
        self.folder, self.latency_s, self.traffic = Path(folder).resolve(), latency_s, Traffic()
        self.fail_first = fail_first
        super().__init__(("127.0.0.1", 0), handler or RangeHandler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> RangeServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.folder``'s files with byte ranges, unless :meth:`refused` answers."""

    server: RangeServer
    _rel = ""
    protocol_version = "HTTP/1.1"  # keep-alive, as object stores and GDAL's curl use it

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        srv = self.server
        rel = self._rel = self.path.split("?", 1)[0].lstrip("/")
        header = self.headers.get("Range", "")
        with srv.traffic.lock:
            srv.traffic.log.append((self.command, rel, header))
            srv.traffic.requests[rel] += 1
            first = srv.traffic.requests[rel] <= srv.fail_first
        if srv.latency_s:
            time.sleep(srv.latency_s)
        if self.refused(first, body):
            return
        path = (srv.folder / rel).resolve()
        if srv.folder not in path.parents or not path.is_file():
            self._send(404, b"not found", {}, body)
            return
        size = path.stat().st_size
        match = _RANGE.match(header)
        if match is None:  # no range, or several: the whole file
            self._send(200, path.read_bytes() if body else b"", {"Accept-Ranges": "bytes"}, body,
                       length=size)  # fmt: skip
            return
        start = int(match.group(1))
        stop = min(size - 1, int(match.group(2)) if match.group(2) else size - 1)
        if start >= size:
            self._send(416, b"", {"Content-Range": f"bytes */{size}"}, body)
            return
        data = b""
        if body:
            with path.open("rb") as f:
                f.seek(start)
                data = f.read(stop - start + 1)
        extra = {"Content-Range": f"bytes {start}-{stop}/{size}", "Accept-Ranges": "bytes"}
        self._send(206, data, extra, body, length=stop - start + 1)

    def refused(self, first: bool, body: bool) -> bool:
        """Answer instead of serving (True when answered): 503 to the first
        ``server.fail_first`` requests of each path (``first``)."""
        if first:
            self._send(503, b"slow down", {}, body)
        return first

    def _send(
        self, status: int, data: bytes, headers: dict[str, str], body: bool, length: int = -1
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) if length < 0 else length))
        self.send_header("Content-Type", "image/tiff" if status < 300 else "text/plain")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if status in (200, 206):
            with self.server.traffic.lock:
                self.server.traffic.served += 1
        if body and data:
            self.wfile.write(data)
            with self.server.traffic.lock:
                self.server.traffic.bytes_sent[self._rel] += len(data)


@contextmanager
def serve_folder(
    folder: Path, latency_s: float = 0.0, fail_first: int = 0
) -> Iterator[tuple[str, Traffic]]:
    """Serve ``folder`` on a free loopback port: ``(base URL, traffic)`` while in the block."""
    with RangeServer(folder, latency_s, fail_first) as server:
        yield server.url, server.traffic
