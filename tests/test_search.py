"""search_scenes / select_scenes / normalize_item on real Earth Search and Planetary Computer items.

Searches run through pystac-client against a real ``rustac serve`` process (the embedded API)
over the real items in ``../shared/data/stac_items``; each result is compared with an
independent filter written here in plain Python over the raw JSON.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest
from shapely.geometry import box, shape

from arctic_rts.catalog import serve_catalog
from arctic_rts.config import SearchConfig
from arctic_rts.errors import CatalogError, ConfigError, NoScenesError, SkippedInputWarning
from arctic_rts.search import mgrs_tile, normalize_item, search_scenes, select_scenes

WORLD = (-180.0, -90.0, 180.0, 90.0)


def _features(path: Path) -> list[dict[str, Any]]:
    doc = json.loads(path.read_text())
    if isinstance(doc, list):
        return doc
    return doc["features"] if doc.get("type") == "FeatureCollection" else [doc]


@pytest.fixture(scope="module")
def stac_items(shared_data: Path) -> Path:
    return shared_data / "stac_items"


@pytest.fixture(scope="module")
def raw_items(stac_items: Path) -> list[dict[str, Any]]:
    """Every item of the folder, as the raw JSON the server was given."""
    out: list[dict[str, Any]] = []
    for path in sorted(stac_items.glob("*.*json")):
        out.extend(f for f in _features(path) if f.get("type") == "Feature")
    return out


@pytest.fixture(scope="module")
def es_items(stac_items: Path) -> list[dict[str, Any]]:
    return _features(stac_items / "items_earth-search_sentinel-2-l2a.geojson")


@pytest.fixture(scope="module")
def pc_items(stac_items: Path) -> list[dict[str, Any]]:
    return _features(stac_items / "items_planetarycomputer_sentinel-2-l2a_ARCTIC_lat_gt60.geojson")


@pytest.fixture(scope="module")
def api(stac_items: Path) -> Iterator[str]:
    """The real embedded STAC API over all real items (Earth Search and Planetary Computer)."""
    with serve_catalog(stac_items) as url:
        yield url


def _independent(
    raw: list[dict[str, Any]],
    collection: str,
    bbox: tuple[float, ...],
    year: int,
    months: tuple[int, ...],
    max_cloud: float,
) -> set[str]:
    """The ids a correct search must return, computed without the server or our code."""
    area = box(*bbox)
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


QUERIES = [
    # collection, bbox, year, months, max cloud cover
    ("sentinel-2-l2a", (-180.0, 60.0, 0.0, 85.0), 2024, (5, 6, 7, 8), 30.0),
    ("sentinel-2-l2a", (0.0, 60.0, 60.0, 85.0), 2024, (5, 6, 7, 8), 50.0),
    ("sentinel-2-l2a", (-180.0, 60.0, 0.0, 85.0), 2024, (2, 4), 10.0),
    ("sentinel-2-l2a", (100.0, 70.0, 140.0, 80.0), 2023, (6, 7, 8, 9), 50.0),
]


@pytest.mark.realdata
@pytest.mark.parametrize(("collection", "bbox", "year", "months", "cloud"), QUERIES)
def test_search_returns_exactly_the_independently_filtered_items(
    api: str,
    raw_items: list[dict[str, Any]],
    collection: str,
    bbox: tuple[float, ...],
    year: int,
    months: tuple[int, ...],
    cloud: float,
) -> None:
    expected = _independent(raw_items, collection, bbox, year, months, cloud)
    # The query is only a test of the filters if each limit on its own excludes items.
    assert _independent(raw_items, collection, bbox, year, tuple(range(1, 13)), cloud) > expected
    assert _independent(raw_items, collection, bbox, year, months, 100.0) > expected
    assert _independent(raw_items, collection, WORLD, year, months, cloud) > expected
    config = SearchConfig(collection=collection, months=months, max_cloud_cover=cloud)
    with warnings.catch_warnings():
        # No DoesNotConformTo (or any other) warning from our own embedded server.
        warnings.simplefilter("error")
        found = search_scenes(bbox, year, stac_url=api, config=config)
    assert {item["id"] for item in found} == expected
    assert len(found) == len(expected)
    for item in found:
        props = item["properties"]
        assert int(props["datetime"][5:7]) in months
        assert props["eo:cloud_cover"] <= cloud
        assert {"B04", "B08", "SCL"} <= set(item["assets"])
        assert item["assets"]["B04"]["raster:bands"][0]["scale"] == pytest.approx(1e-4)
        assert isinstance(props["proj:epsg"], int)
        assert len(props["s2:mgrs_tile"]) == 5


@pytest.mark.realdata
def test_one_search_mixes_both_providers_and_parses_both(
    api: str, raw_items: list[dict[str, Any]]
) -> None:
    # Earth Search holds one of these scenes (38WMA, April 2024), Planetary Computer the rest.
    bbox, months = (0.0, 60.0, 60.0, 85.0), (4, 5)
    found = search_scenes(
        bbox, 2024, stac_url=api, config=SearchConfig(months=months, max_cloud_cover=50.0)
    )
    pc = [i for i in found if "s2:mgrs_tile" in _raw_props(raw_items, i["id"])]
    es = [i for i in found if "mgrs:utm_zone" in _raw_props(raw_items, i["id"])]
    assert pc and es and len(pc) + len(es) == len(found)
    for item in found:
        raw = next(r for r in raw_items if r["id"] == item["id"])
        # Planetary Computer states no raster:bands; baseline >= 04.00 means offset -0.1.
        # Earth Search's COGs flagged boa_offset_applied already carry it: offset 0.
        harmonised = raw["properties"].get("earthsearch:boa_offset_applied") is True
        want = 0.0 if harmonised else -0.1
        assert item["assets"]["B08"]["raster:bands"][0]["offset"] == pytest.approx(want)
        raw_nir = raw["assets"].get("nir", raw["assets"].get("B08"))
        assert item["assets"]["B08"]["href"] == raw_nir["href"]


def _raw_props(raw_items: list[dict[str, Any]], item_id: str) -> dict[str, Any]:
    return next(r["properties"] for r in raw_items if r["id"] == item_id)


@pytest.mark.realdata
def test_default_season_is_june_to_august(api: str, raw_items: list[dict[str, Any]]) -> None:
    bbox = (100.0, 70.0, 140.0, 80.0)
    found = search_scenes(bbox, 2023, stac_url=api)
    defaults = SearchConfig()
    expected = _independent(
        raw_items, "sentinel-2-l2a", bbox, 2023, (6, 7, 8), defaults.max_cloud_cover
    )
    assert {i["id"] for i in found} == expected
    assert expected


@pytest.mark.realdata
def test_no_scenes_error_says_what_was_searched(api: str) -> None:
    with pytest.raises(NoScenesError) as info:
        search_scenes((10.0, 60.0, 11.0, 61.0), 2019, stac_url=api)
    message = str(info.value)
    for part in ("sentinel-2-l2a", "2019", "Jun", "Aug", "60.0", api):
        assert part in message


@pytest.mark.realdata
def test_sign_hook_is_applied_to_every_item(api: str) -> None:
    seen: list[str] = []

    def sign(item: dict[str, Any]) -> dict[str, Any]:
        seen.append(item["id"])
        for asset in item["assets"].values():
            asset["href"] += "?sig=test"
        return item

    found = search_scenes(
        (100.0, 70.0, 140.0, 80.0), 2023, stac_url=api, config=SearchConfig(), sign=sign
    )
    assert sorted(seen) == sorted(i["id"] for i in found)
    assert all(a["href"].endswith("?sig=test") for i in found for a in i["assets"].values())


@pytest.mark.realdata
def test_item_cap_stops_the_search_with_a_warning(api: str) -> None:
    config = SearchConfig(months=(2, 4), max_cloud_cover=100.0, max_items=3)
    with pytest.warns(SkippedInputWarning, match="max_items"):
        found = search_scenes((-180.0, 60.0, 0.0, 85.0), 2024, stac_url=api, config=config)
    assert len(found) == 3


def test_unreachable_api_is_a_one_line_catalog_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port once the socket is closed.
    with pytest.raises(CatalogError) as info:
        search_scenes((0, 60, 1, 61), 2024, stac_url=f"http://127.0.0.1:{port}")
    assert "\n" not in str(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.parametrize("year", [2010, 2024.5, "2024", True])
def test_bad_year_is_a_config_error(year: Any) -> None:
    with pytest.raises(ConfigError, match="year"):
        search_scenes((0, 60, 1, 61), year, stac_url="http://127.0.0.1:9")


def test_bad_bbox_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bbox"):
        search_scenes((1, 60, 0, 61), 2024, stac_url="http://127.0.0.1:9")


# --- normalize_item ---------------------------------------------------------------------------


@pytest.mark.realdata
def test_normalize_earth_search_item(es_items: list[dict[str, Any]]) -> None:
    raw = es_items[0]
    before = copy.deepcopy(raw)
    item = normalize_item(raw)
    assert raw == before, "the input must not be modified"
    # Earth Search flags these COGs earthsearch:boa_offset_applied: their pixels already carry
    # the offset, so the -0.1 that raster:bands still states must not be applied again.
    assert raw["properties"]["earthsearch:boa_offset_applied"] is True
    assert raw["assets"]["red"]["raster:bands"][0]["offset"] == pytest.approx(-0.1)
    assert item["assets"]["B04"] == {**raw["assets"]["red"], "raster:bands": [
        {**raw["assets"]["red"]["raster:bands"][0], "offset": 0.0}
    ]}  # fmt: skip
    assert item["assets"]["SCL"]["href"] == raw["assets"]["scl"]["href"]
    assert item["assets"]["SCL"]["raster:bands"][0]["scale"] == 1.0
    assert "red" not in item["assets"] and "visual" in item["assets"]
    assert item["properties"]["s2:mgrs_tile"] == "32VKL"
    assert item["properties"]["proj:epsg"] == 32632


@pytest.mark.realdata
def test_normalize_planetary_computer_derives_offset_from_baseline(
    pc_items: list[dict[str, Any]],
) -> None:
    baselines = set()
    for raw in pc_items:
        assert "raster:bands" not in raw["assets"]["B04"]
        item = normalize_item(raw)
        baseline = raw["properties"]["s2:processing_baseline"]
        baselines.add(baseline)
        want = -0.1 if tuple(int(p) for p in baseline.split(".")) >= (4, 0) else 0.0
        for band in ("B02", "B04", "B08", "B11", "B8A"):
            entry = item["assets"][band]["raster:bands"][0]
            assert entry == {"scale": pytest.approx(1e-4), "offset": want, "nodata": 0}
        assert item["properties"]["s2:mgrs_tile"] == raw["properties"]["s2:mgrs_tile"]
    # The real set spans both sides of the 04.00 change, including 04.00 itself.
    assert {"02.12", "04.00", "05.10"} <= baselines


@pytest.mark.realdata
def test_normalize_restores_proj_epsg_after_pystac(pc_items: list[dict[str, Any]]) -> None:
    rewritten = pystac.Item.from_dict(copy.deepcopy(pc_items[0])).to_dict(transform_hrefs=False)
    assert "proj:epsg" not in rewritten["properties"]
    assert rewritten["properties"]["proj:code"] == "EPSG:32649"
    assert normalize_item(rewritten)["properties"]["proj:epsg"] == 32649


@pytest.mark.realdata
def test_normalize_earth_search_v0_item(shared_data: Path) -> None:
    raw = json.loads(
        (shared_data / "s2_l2a_cogs_29RKH" / "S2A_31NBJ_20190524_0_L2A.json").read_text()
    )
    item = normalize_item(raw)
    assert item["properties"]["s2:mgrs_tile"] == "31NBJ"
    # Baseline 02.12 from sentinel:product_id: no offset.
    assert item["assets"]["B04"]["raster:bands"][0]["offset"] == 0.0


@pytest.mark.realdata
def test_normalize_is_idempotent(
    es_items: list[dict[str, Any]], pc_items: list[dict[str, Any]]
) -> None:
    for raw in (es_items[3], pc_items[7]):
        once = normalize_item(raw)
        assert normalize_item(once) == once


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2020-02-19T11:34:25.405000Z", "2020-02-19T11:34:25.405000Z"),  # Earth Search
        ("2020-02-19T11:34:25.405+00:00", "2020-02-19T11:34:25.405000Z"),  # pgstac
        ("2020-02-19T11:34:25Z", "2020-02-19T11:34:25Z"),
        ("2020-02-19T12:34:25.405+01:00", "2020-02-19T11:34:25.405000Z"),
        ("2020-02-19T11:34:25", "2020-02-19T11:34:25Z"),  # no zone: UTC
        ("sometime in 2020", "sometime in 2020"),
    ],
)
def test_normalize_writes_datetimes_one_way(given: str, written: str) -> None:
    item = _item("t", assets={})
    item["properties"]["datetime"] = given
    once = normalize_item(item)
    assert once["properties"]["datetime"] == written
    assert normalize_item(once) == once


def test_normalize_prefers_the_items_own_canonical_key() -> None:
    item = _item("x", assets={"B04": {"href": "/a/b04.tif"}, "red": {"href": "/a/red.tif"}})
    assert normalize_item(item)["assets"]["B04"]["href"] == "/a/b04.tif"


def test_relative_hrefs_resolve_against_base_or_self_link(tmp_path: Path) -> None:
    item = _item("rel", assets={"red": {"href": "sub/B04.tif"}})
    assert normalize_item(item, base=tmp_path)["assets"]["B04"]["href"] == str(
        tmp_path / "sub" / "B04.tif"
    )
    item["links"] = [{"rel": "self", "href": "https://example.org/items/rel.json"}]
    assert normalize_item(item)["assets"]["B04"]["href"] == "https://example.org/items/sub/B04.tif"
    item["links"] = []
    with pytest.raises(CatalogError, match="relative"):
        normalize_item(item)


def test_missing_baseline_and_raster_bands_is_an_error() -> None:
    item = _item("S2A_X_no_baseline", assets={"B04": {"href": "/a.tif"}}, baseline=None)
    with pytest.raises(CatalogError, match="processing baseline"):
        normalize_item(item)


@pytest.mark.parametrize(
    ("item_id", "tile"),
    [
        ("S2A_29RKH_20200219_0_L2A", "29RKH"),
        ("S2B_T32VKL_20250717T112116_L2A", "32VKL"),
        ("S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531", "06VVN"),
    ],
)
def test_mgrs_tile_from_id(item_id: str, tile: str) -> None:
    assert mgrs_tile({"id": item_id, "properties": {}}) == tile


def test_mgrs_tile_from_properties() -> None:
    props = {"mgrs:utm_zone": 6, "mgrs:latitude_band": "W", "mgrs:grid_square": "VA"}
    assert mgrs_tile({"id": "x", "properties": props}) == "06WVA"
    assert mgrs_tile({"id": "x", "properties": {"grid:code": "MGRS-6WVA"}}) == "06WVA"
    with pytest.raises(CatalogError, match="MGRS"):
        mgrs_tile({"id": "x", "properties": {}})


# --- select_scenes ----------------------------------------------------------------------------


def _item(
    item_id: str,
    tile: str = "06WVA",
    cloud: float | None = 10.0,
    when: str = "2021-07-01T00:00:00Z",
    assets: dict[str, Any] | None = None,
    baseline: str | None = "05.10",
) -> dict[str, Any]:
    props: dict[str, Any] = {"datetime": when, "s2:mgrs_tile": tile}
    if baseline is not None:
        props["s2:processing_baseline"] = baseline
    if cloud is not None:
        props["eo:cloud_cover"] = cloud
    return {"type": "Feature", "id": item_id, "properties": props, "assets": assets or {}}


def test_select_least_cloudy_per_tile() -> None:
    items = [
        _item("a", "06WVA", 30.0),
        _item("b", "06WVA", 5.0),
        _item("c", "07WXX", 50.0),
        _item("d", "06WVA", 20.0),
    ]
    assert [i["id"] for i in select_scenes(items)] == ["b", "c"]


def test_select_tie_breaks_later_date_then_smaller_id_in_any_order() -> None:
    items = [
        _item("early", cloud=5.0, when="2021-06-01T00:00:00Z"),
        _item("late-b", cloud=5.0, when="2021-08-20T00:00:00Z"),
        _item("late-a", cloud=5.0, when="2021-08-20T00:00:00Z"),
        _item("unknown-cloud", cloud=None, when="2021-08-30T00:00:00Z"),
        _item("cloudy", cloud=6.0, when="2021-08-30T00:00:00Z"),
    ]
    for order in itertools.permutations(items):
        assert [i["id"] for i in select_scenes(order)] == ["late-a"]
    # A missing cloud cover counts as 100 %, so it loses to any stated cover.
    assert select_scenes([items[3], _item("full", cloud=99.0)])[0]["id"] == "full"


@pytest.mark.realdata
def test_select_on_real_items_matches_independent_choice(
    pc_items: list[dict[str, Any]], es_items: list[dict[str, Any]]
) -> None:
    items = [normalize_item(i) for i in pc_items + es_items]
    chosen = select_scenes(items)
    by_tile: dict[str, list[dict[str, Any]]] = {}
    for raw in pc_items + es_items:
        p = raw["properties"]
        tile = p.get("s2:mgrs_tile") or p["grid:code"].removeprefix("MGRS-").zfill(5)
        by_tile.setdefault(tile, []).append(raw)
    assert [i["properties"]["s2:mgrs_tile"] for i in chosen] == sorted(by_tile)
    for item in chosen:
        group = by_tile[item["properties"]["s2:mgrs_tile"]]
        least = min(g["properties"]["eo:cloud_cover"] for g in group)
        assert item["properties"]["eo:cloud_cover"] == least
    assert len(chosen) < len(items)
