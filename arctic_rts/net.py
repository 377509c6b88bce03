"""Timeouts and retries for everything the toolkit asks of the network.

STAC requests (GET and the POST search alike) go through :class:`RetryingStacIO`: each try has
a connect and a read timeout; a 429, a 5xx, a reset connection, a timeout or a truncated answer
is retried after an exponential backoff with full jitter (or the ``Retry-After`` the server
sends), bounded in count and in total time (a host that is unknown or refuses connections is
not: nothing listens there); an answer that is not JSON (an HTML page, say) is
an error that names the URL, never parsed as data. COG reads get GDAL's own timeouts and HTTP
retries (:func:`gdal_http_options`). The numbers come from
:class:`~arctic_rts.config.NetworkConfig`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from typing import Any

import requests
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3.exceptions import NameResolutionError, NewConnectionError

from arctic_rts.config import NetworkConfig
from arctic_rts.errors import CatalogError

logger = logging.getLogger(__name__)

#: HTTP statuses worth another try: throttled, or a server or gateway that failed for now.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

#: Transport failures worth another try: refused, reset, timed out, answer cut short.
_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class RetryingStacIO(StacApiIO):  # type: ignore[misc]
    """pystac-client's I/O with timeouts, bounded retries and answers checked to be JSON."""

    def __init__(self, network: NetworkConfig | None = None, **kwargs: Any) -> None:
        self.network = network or NetworkConfig()
        # max_retries=0: urllib3's own retries (GET only, no backoff) would stack with these.
        super().__init__(timeout=timeouts(self.network), max_retries=0, **kwargs)
        self._random = random.Random()

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        """Send one request, retried as the :class:`NetworkConfig` says; the answer's text.

        Raises:
            APIError: The server answered a status that another try would not change (4xx).
            CatalogError: The tries ran out (the message names the URL and the last failure),
                or the answer is not JSON.
        """
        method = (method or "GET").upper()
        prepped = self._prepare(href, method, headers, parameters)
        net = self.network
        start = time.monotonic()
        for attempt in range(net.max_retries + 1):
            text, failure, wait = self._try(prepped, href)
            if text is not None:
                return text
            delay = self._delay(attempt, wait)
            spent = time.monotonic() - start
            if attempt == net.max_retries:
                break
            if spent + delay > net.retry_total_s:
                if wait is not None:
                    failure += f" (the server asked to wait {delay:.0f} s, past retry_total_s)"
                break
            logger.info("%s %s: %s; retry %d in %.1f s", method, href, failure, attempt + 1, delay)
            time.sleep(delay)
        tries = attempt + 1
        raise CatalogError(
            f"{method} {href} failed after {tries} tr{'y' if tries == 1 else 'ies'} in "
            f"{spent:.0f} s: {failure}. The STAC API may be down, slow or throttling: rerun "
            "later, or raise [network] max_retries, retry_total_s or the timeouts."
        )

    def _prepare(
        self,
        href: str,
        method: str,
        headers: dict[str, str] | None,
        parameters: dict[str, Any] | None,
    ) -> requests.PreparedRequest:
        body = method in ("POST", "PUT", "PATCH")
        request = requests.Request(
            method=method,
            url=href,
            headers=headers,
            json=parameters if body else None,
            params=None if body else dict(parameters or {}),
        )
        modified = self._req_modifier(request) if self._req_modifier else None
        return self.session.prepare_request(modified or request)

    def _try(
        self, prepped: requests.PreparedRequest, href: str
    ) -> tuple[str | None, str, float | None]:
        """One try: ``(text, "", None)``, or ``(None, failure, Retry-After seconds or None)``."""
        try:
            settings = self.session.merge_environment_settings(
                str(prepped.url), proxies={}, stream=None, verify=True, cert=None
            )
            resp = self.session.send(prepped, timeout=self.timeout, **settings)
            content = resp.content
        except _TRANSIENT as err:
            if _nothing_listens(err):
                raise CatalogError(
                    f"cannot connect to {href}: {_describe(err)}; check the URL and that the "
                    "STAC API is up."
                ) from err
            return None, _describe(err), None
        if resp.status_code in RETRY_STATUSES:
            status = f"HTTP {resp.status_code} {resp.reason or ''}".strip()
            return None, status, _retry_after(resp)
        if not 200 <= resp.status_code < 300:
            raise APIError.from_response(resp)
        text = content.decode("utf-8", errors="replace")
        try:
            json.loads(text)
        except ValueError:
            kind = resp.headers.get("Content-Type", "")
            if "html" in kind.lower() or text.lstrip().startswith("<"):
                raise CatalogError(
                    f"{href} answered an HTML page, not STAC JSON ({_excerpt(text)}); is this "
                    "the root URL of a STAC API?"
                ) from None
            return None, f"a truncated or invalid JSON answer ({len(content)} bytes)", None
        return text, "", None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before try ``attempt + 2``: the server's word, else full jitter."""
        net = self.network
        if retry_after is not None:
            return retry_after
        cap = min(net.max_backoff_s, net.backoff_s * 2**attempt)
        return self._random.uniform(0, cap)


def timeouts(network: NetworkConfig) -> tuple[float, float]:
    """``(connect, read)`` timeouts in the form requests takes."""
    return (network.connect_timeout_s, network.read_timeout_s)


def gdal_http_options(network: NetworkConfig) -> dict[str, str]:
    """GDAL configuration options that bound and retry its HTTP reads of COGs.

    GDAL's ``GDAL_HTTP_TIMEOUT`` bounds a whole request (not one read); its retries cover 429
    and 5xx answers. A COG that still fails makes its scene fail, with the reason recorded.
    ``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``: opening a COG lists no folder and asks for
    no side-car file (stackstac sets it when opening; here it holds for odc-stac too). With
    stackstac the options travel inside the read tasks, so they hold in whichever worker
    process reads (docs/yearly-runs.md, "Reading imagery", has the measured effect).
    """
    return {
        "GDAL_HTTP_CONNECTTIMEOUT": str(max(1, round(network.connect_timeout_s))),
        "GDAL_HTTP_TIMEOUT": str(max(1, round(network.read_timeout_s))),
        "GDAL_HTTP_MAX_RETRY": str(network.max_retries),
        "GDAL_HTTP_RETRY_DELAY": str(max(0.1, network.backoff_s)),
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    }


def _retry_after(resp: requests.Response) -> float | None:
    """The ``Retry-After`` of an answer in seconds (a number or an HTTP date); None if absent."""
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _nothing_listens(err: BaseException) -> bool:
    """True when the host is unknown or refuses the connection: another try would not help
    within the seconds a retry waits (a connect timeout, by contrast, is retried)."""
    reason = getattr(err.args[0], "reason", None) if err.args else None
    # urllib3 raises ConnectTimeoutError for a connect timeout, and its subclass
    # NewConnectionError for a refused connection or an unknown host.
    return isinstance(reason, NewConnectionError)


def _describe(err: BaseException) -> str:
    reason = getattr(err.args[0], "reason", None) if err.args else None
    if isinstance(reason, NameResolutionError):
        return "the host name does not resolve"
    if isinstance(reason, NewConnectionError):
        refused = "refused" in str(reason) or "Errno 111" in str(reason)
        return "connection refused" if refused else "no connection could be made"
    if isinstance(err, requests.exceptions.ConnectTimeout):
        return "no connection within the connect timeout"
    if isinstance(err, requests.Timeout):
        return "no answer within the read timeout"
    if isinstance(err, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut short"
    text = " ".join(str(err).split())
    return f"connection failed ({text[:200]})"


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return repr(flat[:60] + ("..." if len(flat) > 60 else ""))
