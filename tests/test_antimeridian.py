"""The antimeridian: boxes with west > east, searches on both sides of 180 degrees, slumps on the
seam merged once in EPSG:3413, inventory regions and label files that cross it.

Searches run through pystac-client against a real ``rustac serve`` process over items built
here on both sides of 180 degrees (the real item sets hold none there; see
``test_search_real_boxes.py`` for real items moved across it).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers the .rio accessor
import shapely
import xarray as xr
from pyproj import Transformer
from rasterio.features import rasterize
from rasterio.transform import from_origin
from test_search_edges import s2_item, write_items

from arctic_rts.catalog import serve_catalog
from arctic_rts.config import MapConfig, RegionConfig, SearchConfig, validate_bbox
from arctic_rts.errors import ConfigError
from arctic_rts.merge import merge_polygons
from arctic_rts.search import search_scenes
from arctic_rts.vectorize import vectorize

#: One degree of longitude across 180, in Chukotka.
ACROSS = (179.5, 65.0, -179.5, 66.0)
WHEN = "2021-07-10T23:00:00Z"


def _split_item(item_id: str) -> dict[str, Any]:
    """An item whose footprint crosses 180, written as GeoJSON asks: split into two parts."""
    item = s2_item(item_id, 179.8, 65.2, WHEN, 5.0, tile="60WXT")
    east = [[179.8, 65.2], [180, 65.2], [180, 65.6], [179.8, 65.6], [179.8, 65.2]]
    west = [[-180, 65.2], [-179.8, 65.2], [-179.8, 65.6], [-180, 65.6], [-180, 65.2]]
    item["geometry"] = {"type": "MultiPolygon", "coordinates": [[east], [west]]}
    item["bbox"] = [179.8, 65.2, -179.8, 65.6]
    return item


@pytest.fixture(scope="module")
def seam_items() -> list[dict[str, Any]]:
    return [
        s2_item("east_of_seam", 179.6, 65.2, WHEN, 5.0, size=0.3, tile="60WWT"),
        s2_item("west_of_seam", -179.9, 65.2, WHEN, 5.0, size=0.3, tile="01WCS"),
        _split_item("across_seam"),
        # Outside the box, on either side and far away.
        s2_item("far_east", 178.0, 65.2, WHEN, 5.0, size=0.3, tile="60WVT"),
        s2_item("far_west", -178.5, 65.2, WHEN, 5.0, size=0.3, tile="01WDS"),
        s2_item("greenwich", 0.0, 65.2, WHEN, 5.0, size=0.3, tile="31WDN"),
    ]


@pytest.fixture(scope="module")
def seam_api(seam_items: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = write_items(tmp_path_factory.mktemp("seam"), seam_items)
    with serve_catalog(folder) as url:
        yield url


def test_a_box_across_180_is_valid_and_has_two_halves() -> None:
    from arctic_rts.config import bbox_parts, geometry_bbox

    assert validate_bbox([179.5, 65, -179.5, 66]) == ACROSS
    assert bbox_parts(ACROSS) == [(179.5, 65.0, 180.0, 66.0), (-180.0, 65.0, -179.5, 66.0)]
    with pytest.raises(ConfigError, match="empty"):
        validate_bbox([179.5, 65, 179.5, 66])
    # Swapped west and east would be a box around most of the globe: refused, with the fix.
    with pytest.raises(ConfigError, match="359 degrees wide here; give west < east"):
        validate_bbox([1, 2, 0, 3])
    # The tight box of parts on both sides crosses 180 rather than circling the globe; a real
    # inventory's extent (-177.9 .. 179.99) is one such.
    parts = shapely.MultiPolygon(
        [shapely.box(170, 60, 179.99, 70), shapely.box(-180, 60, -177.9, 61)]
    )
    assert geometry_bbox(parts) == (170.0, 60.0, -177.9, 70.0)
    assert geometry_bbox(shapely.box(-10, 0, 10, 1)) == (-10.0, 0.0, 10.0, 1.0)


def test_a_search_across_180_finds_both_sides_and_nothing_else(seam_api: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = search_scenes(ACROSS, 2021, stac_url=seam_api, config=SearchConfig(months=(7,)))
    assert sorted(it["id"] for it in found) == ["across_seam", "east_of_seam", "west_of_seam"]


def test_an_inventory_region_across_180_searches_only_there(seam_api: str) -> None:
    from arctic_rts.config import InventoryRunConfig
    from arctic_rts.inventory_run import _read_regions, _select_year

    cfg = InventoryRunConfig(
        out="rts.gpkg", years=(2021,), regions=(RegionConfig("chukotka", ACROSS),), stac=seam_api
    )
    regions = _read_regions(cfg)
    # Reprojected, the two halves are one box one degree wide (equal-area CRS), not the globe.
    area = shapely.union_all(shapely.set_precision(regions.to_crs(6931).geometry.to_numpy(), 0.01))
    assert area.geom_type == "Polygon"
    one_degree = 111.32e3 * np.cos(np.radians(65.5)) * 111.2e3
    assert area.area == pytest.approx(one_degree, rel=0.02)
    config = MapConfig(search=SearchConfig(months=(7,)))
    items, n_found, notes = _select_year(regions, 2021, seam_api, config)
    assert notes == [] and n_found == 3
    assert sorted(it["id"] for it in items) == ["across_seam", "east_of_seam", "west_of_seam"]


def test_labels_on_both_sides_of_180_are_planned_on_scenes_of_both_sides(
    seam_api: str, tmp_path: Path
) -> None:
    from arctic_rts.train.build import plan_dataset

    # One labelled image, undated footprint: its labels lie on both sides of the seam.
    labels = gpd.GeoDataFrame(
        {"image_id": ["chukotka_2021", "chukotka_2021"], "image_date": ["2021-07-12"] * 2},
        geometry=[
            shapely.box(179.85, 65.3, 179.86, 65.31),
            shapely.box(-179.86, 65.3, -179.85, 65.31),
        ],
        crs="EPSG:4326",
    )
    with pytest.warns(UserWarning, match="no footprint"):
        [row] = plan_dataset(labels, stac_url=seam_api, tolerance_days=10)
    # The footprint is the labels' box across 180 (grown by 1 km), not a box around the globe.
    assert sorted(row["scenes"]) == ["across_seam", "east_of_seam", "west_of_seam"]


def _seam_scene(epsg: int, slump: Any) -> xr.DataArray:
    """A 10 m probability grid in UTM ``epsg`` around (180, 65.4): 0.9 in the slump, else 0.05."""
    to = Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
    cx, cy = to.transform(180.0, 65.4)
    x0, y1 = np.floor((cx - 1500) / 10) * 10, np.floor((cy + 1500) / 10) * 10
    transform = from_origin(x0, y1, 10, 10)
    shape = gpd.GeoSeries([slump], crs=3413).to_crs(epsg).iloc[0]
    mask = rasterize([(shape, 1)], out_shape=(300, 300), transform=transform)
    prob = np.where(mask > 0, 0.9, 0.05).astype(np.float32)
    coords = {"y": y1 - 10 * (np.arange(300) + 0.5), "x": x0 + 10 * (np.arange(300) + 0.5)}
    return xr.DataArray(prob, dims=("y", "x"), coords=coords).rio.write_crs(epsg)


def test_a_slump_on_the_seam_seen_from_both_zones_is_one_polygon() -> None:
    centre = Transformer.from_crs(4326, 3413, always_xy=True).transform(180.0, 65.4)
    slump = shapely.Point(centre).buffer(200, 64)  # 400 m across, cut by 180 degrees
    frames = []
    for epsg, scene in ((32660, "S2A_60WWT_2021"), (32601, "S2A_01WCS_2021")):
        attrs = {"scene_id": scene, "mgrs_tile": scene[4:9], "date": "2021-07-10", "year": 2021,
                 "model": "m", "weights_sha256": "ab" * 32, "run_id": "r"}  # fmt: skip
        frames.append(vectorize(_seam_scene(epsg, slump), threshold=0.5, attrs=attrs))
    assert [len(f) for f in frames] == [1, 1]
    merged = merge_polygons(frames)
    assert len(merged) == 1 and merged.crs.to_epsg() == 3413
    row = merged.iloc[0]
    assert row["scene_ids"] == "S2A_01WCS_2021,S2A_60WWT_2021" or set(
        row["scene_ids"].split(",")
    ) == {"S2A_60WWT_2021", "S2A_01WCS_2021"}
    iou = row.geometry.intersection(slump).area / row.geometry.union(slump).area
    assert iou > 0.9
    assert row["area_m2"] == pytest.approx(slump.area, rel=0.1)


def test_an_inventory_region_across_180_keeps_the_slump_on_the_seam() -> None:
    from arctic_rts.config import InventoryRunConfig
    from arctic_rts.inventory_run import _clip_to_regions, _read_regions

    centre = Transformer.from_crs(4326, 3413, always_xy=True).transform(180.0, 65.4)
    slumps = gpd.GeoDataFrame(
        {"rts_id": ["on_seam", "east", "west", "far"]},
        geometry=[shapely.Point(centre).buffer(200)]
        + [
            shapely.Point(
                Transformer.from_crs(4326, 3413, always_xy=True).transform(lon, 65.4)
            ).buffer(200)
            for lon in (179.7, -179.7, -178.0)
        ],
        crs=3413,
    )
    cfg = InventoryRunConfig(
        out="rts.gpkg", years=(2021,), regions=(RegionConfig("chukotka", ACROSS),), stac="x"
    )
    kept = _clip_to_regions(slumps, _read_regions(cfg))
    assert sorted(kept["rts_id"]) == ["east", "on_seam", "west"]
