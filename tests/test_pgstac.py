"""The toolkit against a real database-backed STAC API (stac-fastapi-pgstac on PostgreSQL/PostGIS)
gives what it gives against the embedded server: the same searches (pages of 15, so every box
with more than 15 matches is paged, the largest over ten pages), the same scene selection, and
the same arrays loaded from the real 29RKH COGs.

The item set is the one of ``test_search_real_boxes``: the real Earth Search and Planetary
Computer items of ``../shared/data/stac_items``, the Planetary Computer ones also moved across
180 degrees, plus the 29RKH item with its hrefs on the real COGs. Skips with the reason when
PostgreSQL/PostGIS or the ``pgstac`` extra is absent (``.ci/run`` installs both).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pgstac import missing, pgstac_api
from test_search_real_boxes import BOXES, raw_items  # noqa: F401 (a fixture)

import arctic_rts.search
from arctic_rts.asset_checks import asset_policy
from arctic_rts.catalog import serve_catalog
from arctic_rts.config import LoadConfig, SearchConfig
from arctic_rts.errors import NoScenesError
from arctic_rts.load import load_scenes
from arctic_rts.search import search_scenes, select_scenes

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

RKH_BOX = (-11.5, 24.7, -11.3, 24.9)
#: Items per page asked of both APIs.
PAGE = 15


@pytest.fixture(scope="module")
def items(raw_items: list[dict[str, Any]], rkh_folder: Path) -> list[dict[str, Any]]:  # noqa: F811
    return [*raw_items, json.loads((rkh_folder / "item.json").read_text())]


@pytest.fixture(scope="module")
def apis(
    items: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    reason = missing()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("embedded")
    (folder / "items.geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": items})
    )
    with serve_catalog(folder) as embedded, pgstac_api(items) as pgstac:
        yield {"embedded": embedded, "pgstac": pgstac}


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arctic_rts.search, "_PAGE_SIZE", PAGE)


def _search(
    url: str, collection: str, bbox: Any, year: int, months: Any, cloud: float,
    load: LoadConfig | None = None,
) -> Any:  # fmt: skip
    config = SearchConfig(collection=collection, months=months, max_cloud_cover=cloud)
    try:
        return search_scenes(
            bbox, year, stac_url=url, config=config, assets=asset_policy(url, load)
        )
    except NoScenesError:
        return []


@pytest.mark.parametrize(("collection", "bbox", "year", "months", "cloud"), BOXES)
def test_search_and_select_agree_with_the_embedded_server(
    apis: dict[str, str], small_pages: None, collection: str, bbox: tuple[float, ...],
    year: int, months: tuple[int, ...], cloud: float,
) -> None:  # fmt: skip
    found = {
        name: _search(url, collection, bbox, year, months, cloud) for name, url in apis.items()
    }
    ids = {name: sorted(it["id"] for it in found[name]) for name in found}
    assert ids["pgstac"] and ids["pgstac"] == ids["embedded"]
    selected = {name: [it["id"] for it in select_scenes(found[name])] for name in found}
    assert selected["pgstac"] == selected["embedded"]


def test_a_paged_search_needs_more_than_ten_pages(items: list[dict[str, Any]]) -> None:
    """The largest box is a real test of paging through pgstac's tokens."""
    collection, _, year, months, _ = BOXES[0]
    in_month = [
        f for f in items
        if f.get("collection") == collection
        and f["properties"]["datetime"].startswith(f"{year}-{months[0]:02d}")
    ]  # fmt: skip
    assert len(in_month) > 10 * PAGE


def test_loading_through_pgstac_gives_the_embedded_arrays(
    apis: dict[str, str], small_pages: None, shared_data: Path
) -> None:
    # the COGs lie outside both catalogs: an allowed root of their own
    load = LoadConfig(resolution=100.0, asset_roots=(str(shared_data / "s2_l2a_cogs_29RKH"),))
    arrays = {}
    for name, url in apis.items():
        found = _search(url, "sentinel-2-l2a", RKH_BOX, 2020, (2,), 20.0, load)
        [item] = select_scenes(found)
        assert item["id"] == "S2A_29RKH_20200219_0_L2A"
        [arrays[name]] = load_scenes([item], ["B04", "B11"], load)
    a, b = arrays["pgstac"], arrays["embedded"]
    assert a.shape == b.shape == (2, 1098, 1098) and a.attrs == b.attrs
    np.testing.assert_array_equal(a.x.values, b.x.values)
    np.testing.assert_array_equal(a.y.values, b.y.values)
    va, vb = a.values, b.values
    assert np.isfinite(va).mean() > 0.9
    np.testing.assert_array_equal(va, vb)
