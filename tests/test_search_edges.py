"""Searches at the edges: many items per month, the antimeridian, other providers' schemas.

Every search runs through pystac-client against a real ``rustac serve`` process behind the
embedded API's paging front; expected results are computed here in plain Python.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from arctic_rts.catalog import serve_catalog
from arctic_rts.config import SearchConfig
from arctic_rts.search import search_scenes


def s2_item(
    item_id: str,
    lon: float,
    lat: float,
    when: str,
    cloud: float,
    *,
    size: float = 0.5,
    tile: str = "07WFS",
) -> dict[str, Any]:
    """A minimal Earth-Search-like Sentinel-2 L2A item over ``[lon, lon + size] x [lat, ...]``."""
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [lon, lat, lon + size, lat + size],
        "properties": {
            "datetime": when,
            "eo:cloud_cover": cloud,
            "s2:mgrs_tile": tile,
            "s2:processing_baseline": "05.09",
            "proj:epsg": 32607,
        },
        "links": [],
        # never read here; a local path would lie outside the catalog folder and be refused
        "assets": {"red": {"href": f"https://example.com/{item_id}/B04.tif", "type": "image/tiff"}},
    }


def write_items(folder: Path, items: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"type": "FeatureCollection", "features": items}
    (folder / "items.geojson").write_text(json.dumps(doc))
    return folder


def test_a_month_with_more_than_100_matches_returns_all_of_them(tmp_path: Path) -> None:
    # 249 matching items in July 2021, plus items the filters exclude (too cloudy, June,
    # outside the bbox), served by the embedded API, which pages by 100 at most.
    items = []
    for i in range(249):
        day = 1 + i % 31
        items.append(
            s2_item(
                f"S2B_07WFS_202107{day:02d}_{i:03d}_L2A",
                -139 + (i % 7) * 0.1,
                69.0,
                f"2021-07-{day:02d}T21:00:{i % 60:02d}Z",
                float(i % 50),
            )
        )
    items += [s2_item(f"cloudy_{i}", -139, 69, "2021-07-10T21:00:00Z", 90.0) for i in range(30)]
    items += [s2_item(f"june_{i}", -139, 69, "2021-06-10T21:00:00Z", 5.0) for i in range(30)]
    items += [s2_item(f"far_{i}", -120, 69, "2021-07-10T21:00:00Z", 5.0) for i in range(30)]
    folder = write_items(tmp_path / "items", items)
    config = SearchConfig(months=(7,), max_cloud_cover=60.0)
    with serve_catalog(folder) as url, warnings.catch_warnings():
        warnings.simplefilter("error")
        found = search_scenes((-139.5, 68.8, -138.0, 69.8), 2021, stac_url=url, config=config)
        # All months of the season: 249 in July, nothing lost in the other months either.
        season = search_scenes(
            (-139.5, 68.8, -138.0, 69.8),
            2021,
            stac_url=url,
            config=SearchConfig(months=(6, 7, 8), max_cloud_cover=60.0),
        )
    expected = {it["id"] for it in items[:249]}
    assert len(found) == 249
    assert {it["id"] for it in found} == expected
    assert len(season) == 249 + 30
    stamps = [(it["properties"]["datetime"], it["id"]) for it in found]
    assert stamps == sorted(stamps)
    assert all(dt.datetime.fromisoformat(s[0].replace("Z", "+00:00")).month == 7 for s in stamps)


def test_the_embedded_api_pages_with_next_links(tmp_path: Path) -> None:
    import urllib.request

    items = [s2_item(f"item_{i:03d}", -139, 69, "2021-07-10T21:00:00Z", 5.0) for i in range(230)]
    folder = write_items(tmp_path / "items", items)
    with serve_catalog(folder) as url:
        seen: list[str] = []
        request: Any = f"{url}/search?collections=sentinel-2-l2a&limit=100"
        pages = 0
        while request is not None:
            with urllib.request.urlopen(request) as response:
                page = json.load(response)
            pages += 1
            seen += [f["id"] for f in page["features"]]
            link = next((ln for ln in page["links"] if ln["rel"] == "next"), None)
            request = link["href"] if link else None
    assert pages == 3
    assert sorted(seen) == sorted(it["id"] for it in items) and len(seen) == len(set(seen))


# --- other providers' item schemas --------------------------------------------------------------


def _footprint(item: dict[str, Any]) -> dict[str, Any]:
    """Give a test_load item (UTM 33N, near 69.4 N 15 E) a WGS84 footprint to be searched by."""
    ring = [[14.9, 69.3], [15.1, 69.3], [15.1, 69.5], [14.9, 69.5], [14.9, 69.3]]
    return {
        **item,
        "stac_version": "1.0.0",
        "collection": "sentinel-2-l2a",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "bbox": [14.9, 69.3, 15.1, 69.5],
    }


def _cdse_style(item: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Resolution-suffixed keys (B04_10m...) and a T-prefixed tile code, as CDSE writes them;
    a coarser B04_60m that points at another raster must not be taken for B04."""
    keys = {"red": "B04_10m", "nir": "B08_10m", "swir16": "B11_20m", "scl": "SCL_20m"}
    assets = {keys[k]: v for k, v in item["assets"].items()}
    assets["B04_60m"] = {**assets["B04_10m"], "href": str(folder / "B08.tif")}
    props = {k: v for k, v in item["properties"].items() if not k.startswith("mgrs:")}
    props["s2:mgrs_tile"] = "T33WXS"
    return {**item, "assets": assets, "properties": props}


def test_provider_schemas_are_searched_selected_and_loaded(tmp_path: Path) -> None:
    from test_load import _expected_red, _item, _write_rasters

    from arctic_rts.load import load_scenes
    from arctic_rts.search import select_scenes

    _write_rasters(tmp_path / "r")
    cdse = _cdse_style(
        _item(tmp_path / "r", "S2B_MSIL2A_20210715T100000_N0500_T33WXS"), tmp_path / "r"
    )
    # The same tile, plain code, cloudier: with the T counted as part of the code it would be
    # kept as a second tile.
    plain = _item(tmp_path / "r", "S2B_33WXS_20210716_0_L2A", style="pc")
    plain["properties"]["eo:cloud_cover"] = 30.0
    # An item no provider quirk explains (no raster:bands, no processing baseline anywhere):
    # skipped with a warning, not the end of the search.
    broken = _item(tmp_path / "r", "broken", style="pc")
    del broken["properties"]["s2:processing_baseline"]
    folder = write_items(tmp_path / "items", [_footprint(i) for i in (cdse, plain, broken)])
    config = SearchConfig(months=(7,))
    with (
        serve_catalog(folder, asset_roots=[tmp_path / "r"]) as url,
        pytest.warns(UserWarning, match=r"Skipped 1 of 3.*broken"),
    ):
        found = search_scenes((14.95, 69.35, 15.05, 69.45), 2021, stac_url=url, config=config)
    assert sorted(it["id"] for it in found) == sorted([cdse["id"], plain["id"]])
    chosen = select_scenes(found)
    assert [(it["id"], it["properties"]["s2:mgrs_tile"]) for it in chosen] == [
        (cdse["id"], "33WXS")
    ]
    [da] = load_scenes(chosen, ["B11", "B04", "B08"])
    np.testing.assert_allclose(da.values[1], _expected_red(), rtol=0, atol=1e-7)


def test_legacy_earth_search_boa_offset_applied_is_not_applied_again(tmp_path: Path) -> None:
    """Earth Search v0 items of baseline >= 04.00 flagged ``sentinel:boa_offset_applied: true``
    hold COGs whose pixels already include BOA_ADD_OFFSET (DN - 1000): reflectance is DN * 1e-4.
    """
    from test_load import _item, _write_rasters

    from arctic_rts.load import load_scenes

    _write_rasters(tmp_path / "r")
    flagged = _item(tmp_path / "r", "S2A_33WXS_20220715_0_L2A", style="pc")
    props = flagged["properties"]
    del props["s2:processing_baseline"], props["s2:mgrs_tile"]
    props.update({
        "datetime": "2022-07-15T10:00:00Z",
        "sentinel:utm_zone": 33, "sentinel:latitude_band": "W", "sentinel:grid_square": "XS",
        "sentinel:product_id": "S2A_MSIL2A_20220715T100000_N0400_R122_T33WXS_20220715T120000",
        "sentinel:processing_baseline": "04.00",
        "sentinel:boa_offset_applied": True,
    })  # fmt: skip
    unflagged = json.loads(json.dumps(flagged))
    unflagged["id"] = "S2A_33WXS_20220716_0_L2A"
    unflagged["properties"]["sentinel:boa_offset_applied"] = False
    folder = write_items(tmp_path / "items", [_footprint(flagged), _footprint(unflagged)])
    with serve_catalog(folder, asset_roots=[tmp_path / "r"]) as url:
        found = search_scenes((14.95, 69.35, 15.05, 69.45), 2022, stac_url=url,
                              config=SearchConfig(months=(7,)))  # fmt: skip
    by_id = {it["id"]: it for it in found}
    offsets = {k: a["raster:bands"][0]["offset"] for k, a in by_id[flagged["id"]]["assets"].items()}
    assert offsets == {"B04": 0.0, "B08": 0.0, "B11": 0.0, "SCL": 0.0}
    # Not flagged: baseline 04.00 from the legacy property, so the offset is still needed.
    assert by_id[unflagged["id"]]["assets"]["B04"]["raster:bands"][0]["offset"] == -0.1
    [a, b] = load_scenes([by_id[flagged["id"]], by_id[unflagged["id"]]], ["B08"])
    valid = ~np.isnan(a.values[0])
    np.testing.assert_allclose(a.values[0][valid], 0.3, atol=1e-6)  # 3000 DN, no offset
    np.testing.assert_allclose(b.values[0][valid], 0.2, atol=1e-6)


def test_a_full_page_without_a_next_link_is_reported(tmp_path: Path) -> None:
    """An API that pages without ``next`` links (as rustac does on its own) cannot be trusted to
    have returned everything: the search says so instead of truncating silently."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from arctic_rts.catalog import RUSTAC_SERVER_ID

    items = [s2_item(f"item_{i:03d}", -139, 69, "2021-07-10T21:00:00Z", 5.0) for i in range(150)]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            self._send({
                "type": "Catalog", "id": RUSTAC_SERVER_ID, "stac_version": "1.0.0",
                "description": "pages without next links",
                "conformsTo": ["https://api.stacspec.org/v1.0.0/core",
                               "https://api.stacspec.org/v1.0.0/item-search"],
                "links": [{"rel": "self", "href": base}, {"rel": "root", "href": base},
                          {"rel": "search", "href": f"{base}/search", "method": "POST",
                           "type": "application/geo+json"}],
            })  # fmt: skip

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            page = items[: int(body.get("limit") or 10)]
            self._send({"type": "FeatureCollection", "features": page, "links": []})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.warns(UserWarning, match="full page without a next link"):
            found = search_scenes((-139.5, 68.8, -138.0, 69.8), 2021, stac_url=url,
                                  config=SearchConfig(months=(7,)))  # fmt: skip
    finally:
        server.shutdown()
        server.server_close()
    assert len(found) == 100
