"""A paging front for the embedded STAC API: ``next`` links over a server that has none.

``rustac serve`` (0.9.9, DuckDB backend) answers ``/search`` with at most ``limit`` items and no
``next`` link, and ignores ``token``/``offset``, so a client paging by 100 sees the first 100
matches and nothing tells it that more exist. :class:`PagingFront` listens on the address the
users get, forwards every request to the rustac process behind it, and serves ``/search`` in
pages: it asks the backend for ``offset + limit + 1`` items in a fixed order (``sortby`` id
unless the client sorts), returns ``limit`` of them, and adds a ``next`` link (``token`` =
``offset:N``) while more remain, as the STAC API item-search spec pages. The backend is asked for
everything up to the page's end each time: quadratic in the number of pages, which is nothing
for a local catalog.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from arctic_rts.errors import CatalogError

#: Items per page when a client names no ``limit`` (the STAC API default is 10; 100 is what
#: pystac-client and the toolkit ask for anyway).
DEFAULT_LIMIT = 100

#: Seconds the front waits for the backend on one request.
_BACKEND_TIMEOUT_S = 120.0


class PagingFront:
    """A threaded HTTP server on ``127.0.0.1:port`` in front of a STAC API at ``backend``.

    Bind first (:attr:`url` is known before the backend starts, so rustac can be told to write
    its links with the front's address), then :meth:`start` with the backend's URL.
    """

    def __init__(self, port: int = 0) -> None:
        try:
            self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        except OSError as exc:
            raise CatalogError(
                f"Cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}); pick a free port "
                "or leave the port out."
            ) from exc
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._server.front_url = self.url  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    def start(self, backend: str) -> None:
        self._server.backend = backend.rstrip("/")  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stac-paging-front", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def _token_offset(token: Any) -> int:
    text = str(token or "")
    try:
        return max(0, int(text.removeprefix("offset:"))) if text else 0
    except ValueError:
        return 0


def page_body(body: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
    """The backend request for a POST search body: (body to send, offset, limit)."""
    limit = int(body.get("limit") or DEFAULT_LIMIT)
    offset = _token_offset(body.get("token"))
    sent = {k: v for k, v in body.items() if k != "token"}
    sent["limit"] = offset + limit + 1
    sent.setdefault("sortby", [{"field": "id", "direction": "asc"}])
    return sent, offset, limit


def page_query(query: str) -> tuple[str, dict[str, str], int, int]:
    """The backend query string for a GET search: (query to send, client params, offset, limit)."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    limit = int(params.get("limit") or DEFAULT_LIMIT)
    offset = _token_offset(params.get("token"))
    sent = {k: v for k, v in params.items() if k != "token"}
    sent["limit"] = str(offset + limit + 1)
    sent.setdefault("sortby", "+id")
    return urlencode(sent), params, offset, limit


def cut_page(
    doc: dict[str, Any], offset: int, limit: int, next_link: dict[str, Any]
) -> dict[str, Any]:
    """Keep one page of a backend answer and link the next page while more items remain."""
    features = list(doc.get("features") or [])
    links = [link for link in doc.get("links") or [] if link.get("rel") != "next"]
    if len(features) > offset + limit:
        links.append(next_link)
    page = features[offset : offset + limit]
    return {**doc, "features": page, "links": links, "numberReturned": len(page)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the backend keeps the log."""

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path.rstrip("/") != "/search":
            self._forward("GET", self.path, None)
            return
        query, params, offset, limit = page_query(parts.query)
        status, doc = self._backend_json("GET", f"{parts.path}?{query}", None)
        if status != 200 or not isinstance(doc, dict):
            self._reply(status, doc)
            return
        params["token"] = f"offset:{offset + limit}"
        link = {
            "rel": "next",
            "type": "application/geo+json",
            "method": "GET",
            "href": f"{self._front()}{parts.path}?{urlencode(params)}",
        }
        self._reply(200, cut_page(doc, offset, limit, link))

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if urlsplit(self.path).path.rstrip("/") != "/search":
            self._forward("POST", self.path, raw)
            return
        try:
            body = json.loads(raw or b"{}")
            sent, offset, limit = page_body(body)
        except (ValueError, TypeError, AttributeError):
            self._forward("POST", self.path, raw)
            return
        status, doc = self._backend_json("POST", self.path, json.dumps(sent).encode())
        if status != 200 or not isinstance(doc, dict):
            self._reply(status, doc)
            return
        link = {
            "rel": "next",
            "type": "application/geo+json",
            "method": "POST",
            "href": f"{self._front()}/search",
            "body": {**body, "token": f"offset:{offset + limit}"},
            "merge": False,
        }
        self._reply(200, cut_page(doc, offset, limit, link))

    def _front(self) -> str:
        url: str = self.server.front_url  # type: ignore[attr-defined]
        return url

    def _backend(self, method: str, path: str, data: bytes | None) -> tuple[int, str, bytes]:
        backend: str = self.server.backend  # type: ignore[attr-defined]
        headers = {"Content-Type": self.headers.get("Content-Type") or "application/json"}
        request = urllib.request.Request(backend + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=_BACKEND_TIMEOUT_S) as response:
                ctype = response.headers.get("Content-Type", "application/json")
                return response.status, ctype, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", "text/plain"), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            return 502, "text/plain", f"STAC backend unreachable: {exc}".encode()

    def _backend_json(self, method: str, path: str, data: bytes | None) -> tuple[int, Any]:
        status, _, payload = self._backend(method, path, data)
        try:
            return status, json.loads(payload)
        except ValueError:
            return (status if status != 200 else 502), payload.decode(errors="replace")

    def _forward(self, method: str, path: str, data: bytes | None) -> None:
        status, ctype, payload = self._backend(method, path, data)
        self._send(status, ctype, payload)

    def _reply(self, status: int, doc: Any) -> None:
        if isinstance(doc, str):
            self._send(status, "text/plain", doc.encode())
        else:
            self._send(status, "application/geo+json", json.dumps(doc).encode())

    def _send(self, status: int, ctype: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
