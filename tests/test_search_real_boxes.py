"""search_scenes on the real item sets of ``../shared/data/stac_items`` against an independent
footprint filter, for ten boxes: one month with more than 100 matches (the embedded API pages by
100), and boxes across 180 degrees over real items moved there (the real sets hold none near it:
each Planetary Computer item is shifted 300 degrees east, its footprint split at 180 as GeoJSON
asks, under a collection of its own).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from shapely.geometry import box, mapping, shape

from arctic_rts.catalog import serve_catalog
from arctic_rts.config import SearchConfig
from arctic_rts.errors import NoScenesError
from arctic_rts.search import search_scenes

pytestmark = pytest.mark.realdata

ROTATED = "sentinel-2-l2a-moved-across-180"
SHIFT = 300.0


def _features(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text())
    feats = doc if isinstance(doc, list) else doc.get("features", [doc])
    return [f for f in feats if f.get("type") == "Feature"]


def _shift(geom: Any, dx: float) -> Any:
    return shapely.transform(geom, lambda xy: xy + np.array([dx, 0.0]))


def _moved(feature: dict[str, Any]) -> dict[str, Any]:
    """A real item shifted SHIFT degrees east; a footprint that then crosses 180 is split."""
    geom = _shift(shape(feature["geometry"]), SHIFT)  # longitudes now 120 .. 480
    east = geom.intersection(box(0, -90, 180, 90))
    west = _shift(geom.intersection(box(180, -90, 540, 90)), -360.0)
    polys = [p for part in (east, west) for p in shapely.get_parts(part) if p.area > 0]
    geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    w, s, e, n = shapely.bounds(geom).tolist()
    if not east.is_empty and not west.is_empty:  # across 180: west > east
        w, e = east.bounds[0], west.bounds[2]
    out = json.loads(json.dumps(feature))
    out.update(id=f"moved-{feature['id']}", collection=ROTATED, geometry=mapping(geom))
    out["bbox"] = [w, s, e, n]
    out["links"] = []
    return out


@pytest.fixture(scope="module")
def raw_items(shared_data: Path) -> list[dict[str, Any]]:
    folder = shared_data / "stac_items"
    real = [f for path in sorted(folder.glob("*.*json")) for f in _features(path)]
    pc = _features(folder / "items_planetarycomputer_sentinel-2-l2a_ARCTIC_lat_gt60.geojson")
    return real + [_moved(f) for f in pc]


@pytest.fixture(scope="module")
def api(raw_items: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("real-and-moved")
    (folder / "items.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": raw_items})
    )
    with serve_catalog(folder) as url:
        yield url


def _area(bbox: tuple[float, ...]) -> Any:
    """The box as an area, written out here: two boxes when west > east."""
    w, s, e, n = bbox
    return box(w, s, e, n) if w < e else box(w, s, 180, n).union(box(-180, s, e, n))


def _independent(
    raw: list[dict[str, Any]], collection: str, bbox: tuple[float, ...], year: int,
    months: tuple[int, ...], max_cloud: float,
) -> set[str]:  # fmt: skip
    area = _area(bbox)
    ids = set()
    for f in raw:
        props = f["properties"]
        when = dt.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
        if (
            f.get("collection") == collection
            and when.year == year
            and when.month in months
            and props["eo:cloud_cover"] <= max_cloud
            and shape(f["geometry"]).intersects(area)
        ):
            ids.add(f["id"])
    return ids


BOXES = [
    # collection, bbox, year, months, max cloud cover
    ("sentinel-2-l2a", (-180.0, 60.0, 60.0, 90.0), 2024, (4,), 100.0),  # 183 in one month
    ("sentinel-2-l2a", (-180.0, 55.0, 180.0, 90.0), 2024, (2, 4, 5), 50.0),
    ("sentinel-2-l2a", (-100.0, 75.0, -40.0, 84.0), 2024, (4, 5), 60.0),
    ("sentinel-2-l2a", (-60.0, -15.0, -20.0, 20.0), 2023, (10, 11), 60.0),
    ("sentinel-2-c1-l2a", (0.0, 25.0, 40.0, 72.0), 2024, (2, 5, 8), 40.0),
    ("sentinel-2-l1c", (-70.0, -20.0, 50.0, 80.0), 2025, (6, 7), 50.0),
    ("sentinel-2-l1c", (0.0, 55.0, 50.0, 80.0), 2024, (4, 5, 8), 60.0),
    (ROTATED, (170.0, 60.0, -170.0, 80.0), 2024, (4, 5), 60.0),  # across 180
    (ROTATED, (179.0, 65.0, -179.0, 78.0), 2024, (2, 4, 5), 80.0),  # across 180, narrow
    (ROTATED, (150.0, 60.0, 180.0, 85.0), 2024, (4,), 100.0),  # up to 180 from the east
]


@pytest.mark.parametrize(("collection", "bbox", "year", "months", "cloud"), BOXES)
def test_search_equals_an_independent_footprint_filter(
    api: str, raw_items: list[dict[str, Any]], collection: str, bbox: tuple[float, ...],
    year: int, months: tuple[int, ...], cloud: float,
) -> None:  # fmt: skip
    expected = _independent(raw_items, collection, bbox, year, months, cloud)
    # Every box is a test of the footprint filter: the same query over the world finds more.
    world = _independent(raw_items, collection, (-180, -90, 180, 90), year, months, cloud)
    assert world > expected
    config = SearchConfig(collection=collection, months=months, max_cloud_cover=cloud)
    try:
        found = {it["id"] for it in search_scenes(bbox, year, stac_url=api, config=config)}
    except NoScenesError:
        found = set()
    assert found == expected
    assert expected  # and none is vacuous


def test_one_of_the_boxes_has_more_than_100_matches_in_one_month(
    raw_items: list[dict[str, Any]],
) -> None:
    collection, bbox, year, months, cloud = BOXES[0]
    assert len(months) == 1
    assert len(_independent(raw_items, collection, bbox, year, months, cloud)) > 100


def test_moved_items_lie_on_both_sides_of_180(raw_items: list[dict[str, Any]]) -> None:
    moved = [f for f in raw_items if f["collection"] == ROTATED]
    split = [f for f in moved if f["geometry"]["type"] == "MultiPolygon"]
    west_of_seam = [f for f in moved if f["bbox"][2] < -170 and f["bbox"][0] < 0]
    east_of_seam = [f for f in moved if f["bbox"][0] > 170 and f["bbox"][0] < f["bbox"][2]]
    assert split and west_of_seam and east_of_seam
