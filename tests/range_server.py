"""A small HTTP server for COGs on loopback, for tests and benchmarks (not product code).

It serves the files of one folder with ``Range`` support (one range per request, as GDAL's
``/vsicurl/`` asks for them; a multi-range request is answered with the whole file, as a
server without multipart support would), answers ``HEAD``, waits ``latency_s`` before each
answer (a remote object store's first-byte latency), answers the first ``fail_first`` requests
for each path with 503 (a throttled store), and counts the requests and the bytes it sent, per
path.
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, folder: Path, latency_s: float, traffic: Traffic, fail_first: int) -> None:
        self.folder, self.latency_s, self.traffic = folder.resolve(), latency_s, traffic
        self.fail_first = fail_first
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
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
            refuse = srv.traffic.requests[rel] <= srv.fail_first
        if srv.latency_s:
            time.sleep(srv.latency_s)
        if refuse:
            self._send(503, b"slow down", {}, body)
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

    def _send(
        self, status: int, data: bytes, headers: dict[str, str], body: bool, length: int = -1
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(data) if length < 0 else length))
        self.send_header("Content-Type", "image/tiff" if status < 300 else "text/plain")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if body and data:
            self.wfile.write(data)
            with self.server.traffic.lock:
                self.server.traffic.bytes_sent[self._rel] += len(data)


@contextmanager
def serve_folder(
    folder: Path, latency_s: float = 0.0, fail_first: int = 0
) -> Iterator[tuple[str, Traffic]]:
    """Serve ``folder`` on a free loopback port: ``(base URL, traffic)`` while in the block."""
    traffic = Traffic()
    server = _Server(Path(folder), latency_s, traffic, fail_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", traffic
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
