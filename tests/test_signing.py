"""Read-time signing: hrefs are signed (again) through the ``sign`` hook each time a block is read.

A loopback HTTP server serves the test rasters (with byte ranges, as GDAL reads COGs) only to
URLs that carry a valid, unexpired token, as Planetary Computer's blob storage does with its
SAS tokens (which expire after about 45 minutes). The items are searched through the embedded
STAC API and signed at search time with short-lived tokens; by the time the pixels are read
those tokens have expired.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from range_server import RangeHandler, RangeServer
from test_load import _expected_red, _item, _write_rasters
from test_search_edges import write_items

from arctic_rts.catalog import serve_catalog
from arctic_rts.config import SearchConfig
from arctic_rts.load import load_scenes
from arctic_rts.search import UNSIGNED_HREF, search_scenes

SECRET = b"not-a-real-key"
#: Seconds a token lives: shorter than the pause between search and read below.
LIFETIME = 1.0


def _token(path: str, expires: str) -> str:
    return hmac.new(SECRET, f"{path}|{expires}".encode(), hashlib.sha256).hexdigest()


def sign(item: dict[str, Any]) -> dict[str, Any]:
    """A Planetary-Computer-like hook: a fresh expiring token on every asset href."""
    expires = f"{time.time() + LIFETIME:.3f}"
    for asset in item["assets"].values():
        href = str(asset["href"]).split("?", 1)[0]
        asset["href"] = f"{href}?se={expires}&sig={_token(urlsplit(href).path, expires)}"
    return item


class _TokenServer(RangeServer):
    refused: int = 0


class _Handler(RangeHandler):
    server: _TokenServer

    def refused(self, first: bool, body: bool) -> bool:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        expires = (query.get("se") or [""])[0]
        sig = (query.get("sig") or [""])[0]
        fresh = bool(expires) and float(expires) > time.time()
        if fresh and hmac.compare_digest(sig, _token(parts.path, expires)):
            return False
        self.server.refused += 1
        self._send(403, b"", {}, body)
        return True


@pytest.fixture()
def token_server(tmp_path: Path) -> Iterator[tuple[_TokenServer, str]]:
    _write_rasters(tmp_path / "r")
    with _TokenServer(tmp_path, handler=_Handler) as server:
        yield server, server.url


def _searched(tmp_path: Path, base: str) -> list[dict[str, Any]]:
    """The test item, hrefs on the token server, searched through the embedded API and
    signed at search time."""
    from test_search_edges import _footprint

    item = _footprint(_item(tmp_path / "r"))
    for asset in item["assets"].values():
        asset["href"] = f"{base}/r/{Path(asset['href']).name}"
    folder = write_items(tmp_path / "items", [item])
    with serve_catalog(folder) as url:
        found = search_scenes(
            (14.95, 69.35, 15.05, 69.45), 2021, stac_url=url,
            config=SearchConfig(months=(7,)), sign=sign,
        )  # fmt: skip
    assert len(found) == 1
    return found


def test_expired_search_time_tokens_are_renewed_when_blocks_are_read(
    tmp_path: Path, token_server: tuple[_TokenServer, str]
) -> None:
    server, base = token_server
    found = _searched(tmp_path, base)
    asset = found[0]["assets"]["B04"]
    assert "sig=" in asset["href"] and asset[UNSIGNED_HREF] == f"{base}/r/B04.tif"
    time.sleep(LIFETIME + 0.5)  # every search-time token has expired now
    [da] = load_scenes(found, ["B11", "B04", "B08"], sign=sign)
    assert server.traffic.served == 0  # lazy: nothing read yet
    np.testing.assert_allclose(da.values[1], _expected_red(), rtol=0, atol=1e-7)
    assert server.traffic.served > 0 and server.refused == 0
    # Read again after the read-time tokens expired too: signed afresh, read again.
    time.sleep(LIFETIME + 0.5)
    np.testing.assert_allclose(da.values[1], _expected_red(), rtol=0, atol=1e-7)
    assert server.refused == 0


def test_without_read_time_signing_the_expired_tokens_are_refused(
    tmp_path: Path, token_server: tuple[_TokenServer, str]
) -> None:
    # The failure read-time signing removes: search-time tokens used after they expired.
    server, base = token_server
    found = _searched(tmp_path, base)
    time.sleep(LIFETIME + 0.5)
    [da] = load_scenes(found, ["B04"])
    with pytest.raises(RuntimeError, match=r"\.tif\?se=.*403"):
        da.values  # noqa: B018
    assert server.refused > 0
