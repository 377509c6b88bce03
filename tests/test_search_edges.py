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
        "assets": {"red": {"href": f"/data/{item_id}/B04.tif", "type": "image/tiff"}},
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
